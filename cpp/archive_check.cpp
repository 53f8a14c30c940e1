// Integrity of an export's zip archive (see archive_check.h for why).
//
// The zip layout read here (PKWARE APPNOTE): the end-of-central-directory record (EOCD) at the end
// of the file (and, for ZIP64 archives, the ZIP64 EOCD its locator points to) gives the central
// directory; each directory entry gives an entry's compression method, CRC-32, sizes and the offset
// of its local header, after which (name, extra field) the entry's bytes follow.
#include "archive_check.h"

#include "engine.h"  // ModelError
#include "torch_errors.h"  // quoted_path

#include <sys/types.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

// miniz's raw-deflate decoder, compiled into libtorch (torch writes its archives with miniz and
// deflates the code entries): returns the decompressed size or (size_t)-1
extern "C" size_t tinfl_decompress_mem_to_mem(void* out, size_t out_len, const void* src, size_t src_len,
                                              int flags);

namespace mlip {

namespace {

// slicing-by-8 tables of the reflected polynomial 0xEDB88320
struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};

const CrcTables& crc_tables() {
  static const CrcTables tables;
  return tables;
}

uint16_t u16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t u64(const unsigned char* p) { return u32(p) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

constexpr uint32_t SIG_LOCAL = 0x04034b50, SIG_CENTRAL = 0x02014b50, SIG_EOCD = 0x06054b50,
                   SIG_ZIP64_EOCD = 0x06064b50, SIG_ZIP64_LOCATOR = 0x07064b50;

struct File {
  std::FILE* f = nullptr;
  uint64_t size = 0;
  ~File() {
    if (f) std::fclose(f);
  }
  bool read(uint64_t offset, void* buf, size_t n) const {
    if (offset > size || n > size - offset) return false;
    if (fseeko(f, static_cast<off_t>(offset), SEEK_SET) != 0) return false;
    return std::fread(buf, 1, n, f) == n;
  }
};

class Damaged {
 public:
  explicit Damaged(const std::string& path) : path_(path) {}
  [[noreturn]] void operator()(const std::string& what) const {
    throw ModelError("model file " + quoted_path(path_) + " is damaged: " + what);
  }

 private:
  std::string path_;
};

}  // namespace

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  const auto& T = crc_tables().t;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (n >= 8) {
    const uint32_t a = crc ^ u32(p), b = u32(p + 4);
    crc = T[7][a & 0xFF] ^ T[6][(a >> 8) & 0xFF] ^ T[5][(a >> 16) & 0xFF] ^ T[4][a >> 24] ^ T[3][b & 0xFF] ^
          T[2][(b >> 8) & 0xFF] ^ T[1][(b >> 16) & 0xFF] ^ T[0][b >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ T[0][(crc ^ *p++) & 0xFF];
  return ~crc;
}

void check_archive(const std::string& path) {
  File file;
  file.f = std::fopen(path.c_str(), "rb");
  if (!file.f) return;  // the caller reports unreadable files
  if (fseeko(file.f, 0, SEEK_END) != 0) return;
  const off_t end = ftello(file.f);
  if (end < 0) return;
  file.size = static_cast<uint64_t>(end);
  const Damaged damaged(path);

  // the EOCD: 22 bytes + a comment of at most 65535 bytes at the end of the file
  unsigned char head[4] = {0, 0, 0, 0};
  const bool starts_as_zip = file.read(0, head, 4) && u32(head) == SIG_LOCAL;
  const uint64_t tail_len = std::min<uint64_t>(file.size, 22 + 65535);
  std::vector<unsigned char> tail(tail_len);
  if (tail_len < 22 || !file.read(file.size - tail_len, tail.data(), tail_len)) {
    if (starts_as_zip) damaged("it ends before its zip directory (a truncated file?)");
    return;
  }
  int64_t eocd = -1;
  for (int64_t k = static_cast<int64_t>(tail_len) - 22; k >= 0; --k) {
    if (u32(&tail[k]) == SIG_EOCD && k + 22 + u16(&tail[k + 20]) <= static_cast<int64_t>(tail_len)) {
      eocd = k;
      break;
    }
  }
  if (eocd < 0) {
    // no zip directory: not a zip archive at all (torch's loader names it), or one cut short
    if (starts_as_zip) damaged("it has no zip directory at its end (a truncated file?)");
    return;
  }
  const uint64_t eocd_pos = file.size - tail_len + static_cast<uint64_t>(eocd);
  uint64_t n_entries = u16(&tail[eocd + 10]);
  uint64_t cd_size = u32(&tail[eocd + 12]);
  uint64_t cd_offset = u32(&tail[eocd + 16]);
  if (eocd_pos >= 20) {
    unsigned char loc[20];
    if (file.read(eocd_pos - 20, loc, 20) && u32(loc) == SIG_ZIP64_LOCATOR) {
      unsigned char z[56];
      if (!file.read(u64(loc + 8), z, 56) || u32(z) != SIG_ZIP64_EOCD)
        damaged("its ZIP64 directory record is unreadable");
      n_entries = u64(z + 32);
      cd_size = u64(z + 40);
      cd_offset = u64(z + 48);
    }
  }
  if (cd_offset > file.size || cd_size > file.size - cd_offset)
    damaged("its zip directory lies outside the file (a truncated file?)");
  std::vector<unsigned char> cd(cd_size);
  if (cd_size > 0 && !file.read(cd_offset, cd.data(), cd_size)) damaged("its zip directory is unreadable");

  std::vector<unsigned char> buf;
  uint64_t pos = 0;
  for (uint64_t e = 0; e < n_entries; ++e) {
    if (pos + 46 > cd_size || u32(&cd[pos]) != SIG_CENTRAL)
      damaged("its zip directory is inconsistent at entry " + std::to_string(e));
    const unsigned char* c = &cd[pos];
    const uint16_t method = u16(c + 10);
    const uint32_t crc = u32(c + 16);
    uint64_t comp = u32(c + 20), uncomp = u32(c + 24);
    const uint16_t name_len = u16(c + 28), extra_len = u16(c + 30), comment_len = u16(c + 32);
    uint64_t local = u32(c + 42);
    if (pos + 46 + name_len + extra_len + comment_len > cd_size)
      damaged("its zip directory is inconsistent at entry " + std::to_string(e));
    const std::string name(reinterpret_cast<const char*>(c + 46), name_len);
    // ZIP64 extra field: the 64-bit values of the fields that hold 0xFFFFFFFF, in this order
    for (uint64_t x = 0; x + 4 <= extra_len;) {
      const unsigned char* ex = c + 46 + name_len + x;
      const uint16_t id = u16(ex), len = u16(ex + 2);
      if (x + 4 + len > extra_len) break;
      if (id == 0x0001) {
        const unsigned char* v = ex + 4;
        const unsigned char* v_end = v + len;
        if (uncomp == 0xFFFFFFFFu && v + 8 <= v_end) uncomp = u64(v), v += 8;
        if (comp == 0xFFFFFFFFu && v + 8 <= v_end) comp = u64(v), v += 8;
        if (local == 0xFFFFFFFFu && v + 8 <= v_end) local = u64(v), v += 8;
      }
      x += 4 + len;
    }
    pos += 46 + name_len + extra_len + comment_len;

    unsigned char lh[30];
    if (!file.read(local, lh, 30) || u32(lh) != SIG_LOCAL)
      damaged("entry '" + name + "' has no local header where the zip directory says");
    const uint64_t data = local + 30 + u16(lh + 26) + u16(lh + 28);
    if (data > file.size || comp > file.size - data)
      damaged("entry '" + name + "' is truncated (a truncated file?)");
    if (crc == 0) continue;  // written without CRCs: nothing to compare

    uint32_t got = 0;
    if (method == 0) {  // stored (torch's tensors, pickles, ...)
      constexpr size_t CHUNK = size_t(1) << 20;
      buf.resize(static_cast<size_t>(std::min<uint64_t>(comp, CHUNK)));
      for (uint64_t done = 0; done < comp;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(comp - done, CHUNK));
        if (!file.read(data + done, buf.data(), n)) damaged("entry '" + name + "' is unreadable");
        got = crc32(buf.data(), n, got);
        done += n;
      }
    } else if (method == 8) {  // deflated (torch's code entries)
      // deflate expands at most ~1032:1; larger claims are a damaged directory (and no huge allocation)
      if (uncomp > 1032 * comp + 1024) damaged("entry '" + name + "' has inconsistent sizes");
      std::vector<unsigned char> in(static_cast<size_t>(comp)), out(static_cast<size_t>(uncomp));
      if (comp > 0 && !file.read(data, in.data(), in.size())) damaged("entry '" + name + "' is unreadable");
      const size_t n = tinfl_decompress_mem_to_mem(out.data(), out.size(), in.data(), in.size(), 0);
      if (n != out.size())
        damaged("entry '" + name + "' cannot be decompressed (the file changed after it was written)");
      got = crc32(out.data(), out.size());
    } else {
      continue;  // other methods: torch cannot read them either and says so
    }
    if (got != crc) damaged("entry '" + name + "' fails its CRC check (the file changed after it was written)");
  }
}

}  // namespace mlip
