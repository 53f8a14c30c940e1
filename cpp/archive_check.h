// Integrity of an export before torch reads it.
//
// Why: an export is a TorchScript zip archive whose directory records a CRC-32 of every entry, but
// torch's loader does not compare them: bytes flipped inside a stored tensor load without a word
// and give other energies. The engine is the one place the ASE calculator and LAMMPS load through,
// so it checks every entry here first (mlip._core.check_archive gives Python tools the same check).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mlip {

// Throws ModelError "model file '<path>' is damaged: entry '<name>' fails its CRC check (...)" (or
// names the entry that is truncated / cannot be decompressed, or the inconsistent zip directory).
// Checks stored and deflated entries; an entry whose recorded CRC is 0 (an archive written without
// CRCs) is not checked. A file that is not a zip archive at all passes: torch's loader reports it.
void check_archive(const std::string& path);

// CRC-32 (ISO-HDLC, the zip/zlib one) of n bytes, continuing from crc (0 to start).
uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

}  // namespace mlip
