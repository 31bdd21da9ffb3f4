// Parsing of the KV cache options that are not ladders (kvtier/kv_options.h).
#include <cctype>
#include <cstdint>
#include <string>

#include "kvtier/kv_options.h"

namespace kvtier {

Result<size_t> parse_byte_size(const std::string& text) {
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    if (value > (UINT64_MAX - 9) / 10) return Status::error("byte size '" + text + "' is too large");
    value = value * 10 + static_cast<uint64_t>(text[i] - '0');
    ++i;
  }
  if (i == 0) return Status::error("byte size '" + text + "' does not start with a number (e.g. 512M)");
  std::string unit;
  for (; i < text.size(); ++i) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  int shift = 0;
  if (unit.empty() || unit == "B") {
    shift = 0;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    shift = 10;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    shift = 20;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    shift = 30;
  } else if (unit == "T" || unit == "TB" || unit == "TIB") {
    shift = 40;
  } else {
    return Status::error("byte size '" + text + "' has an unknown unit (use K, M, G or T)");
  }
  if (shift > 0 && value > (UINT64_MAX >> shift)) return Status::error("byte size '" + text + "' is too large");
  if (value == 0) return Status::error("byte size '" + text + "' is zero");
  return static_cast<size_t>(value << shift);
}

}  // namespace kvtier
