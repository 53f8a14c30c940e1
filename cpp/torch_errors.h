// Turning torch's error texts into the one-line messages the engine throws.
//
// Why: a c10::Error's text can be pages long (a TorchScript traceback, C++ frames, torch's generic
// advice), while mlip's rule is one clear line naming the problem. Every part of the engine that
// calls into torch (loading, the backends, the grade) wraps the error with these helpers, so the
// messages read the same everywhere.
#pragma once

#include <string>

namespace c10 {
class Error;
}

namespace mlip {

// A short, readable message from a (possibly huge) torch error text: the reason line of a
// TorchScript interpreter error, else the first line without torch's generic advice; at most
// 400 characters.
std::string torch_message(const std::string& what);
std::string torch_message(const c10::Error& e);

// 'path' (a file name as it appears in the engine's messages).
std::string quoted_path(const std::string& path);

// Call inside a catch block: rethrows the exception being handled as the engine's one-line error.
// A torch (or other std::exception) failure becomes ModelError(prefix + one line); the engine's
// own ModelError / InputError pass unchanged.
[[noreturn]] void rethrow_one_line(const char* prefix);

// Runs f; any failure inside is rethrown by rethrow_one_line(prefix).
template <class F>
void one_line_errors(const char* prefix, F&& f) {
  try {
    f();
  } catch (...) {
    rethrow_one_line(prefix);
  }
}

}  // namespace mlip
