// Torch error text -> one-line message (see torch_errors.h for why).
#include "torch_errors.h"

#include "engine.h"  // ModelError, InputError

#include <c10/util/Exception.h>

#include <sstream>
#include <vector>

namespace mlip {

namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::string shorten(std::string s, size_t max_len = 400) {
  if (s.size() > max_len) s = s.substr(0, max_len - 3) + "...";
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

}  // namespace

// TorchScript interpreter errors put the real reason ("RuntimeError: ...") on the last line after
// a TorchScript traceback; other errors on the first line.
std::string torch_message(const std::string& what) {
  auto lines = split_lines(what);
  if (lines.empty()) return "unknown torch error";
  if (what.find("TorchScript interpreter") != std::string::npos ||
      what.find("Traceback of TorchScript") != std::string::npos) {
    for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
      if (it->find("Error") != std::string::npos || it->find("error") != std::string::npos)
        return shorten(*it);
    }
    return shorten(lines.back());
  }
  std::string first = lines.front();
  // drop torch's generic advice after the actual reason
  for (const char* tail : {" This is an internal miniz error", " If you are seeing this error"}) {
    auto pos = first.find(tail);
    if (pos != std::string::npos) first = first.substr(0, pos);
  }
  return shorten(first);
}

std::string torch_message(const c10::Error& e) { return torch_message(e.what_without_backtrace()); }

std::string quoted_path(const std::string& path) { return "'" + path + "'"; }

void rethrow_one_line(const char* prefix) {
  try {
    throw;
  } catch (const c10::Error& e) {
    throw ModelError(prefix + torch_message(e));
  } catch (const ModelError&) {
    throw;
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw ModelError(prefix + torch_message(std::string(e.what())));
  }
}

}  // namespace mlip
