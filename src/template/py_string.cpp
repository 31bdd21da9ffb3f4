#include "template/py_string.h"

#include <algorithm>
#include <clocale>
#include <cwctype>

#include <locale.h>

namespace kvtier::jinja::py {

uint32_t next_code_point(std::string_view s, size_t& i) {
  const uint8_t b0 = static_cast<uint8_t>(s[i]);
  const int extra = b0 < 0x80 ? 0 : (b0 >> 5) == 0x6 ? 1 : (b0 >> 4) == 0xE ? 2 : (b0 >> 3) == 0x1E ? 3 : -1;
  // ASCII, a stray continuation byte, or a sequence cut off by the end: one byte, itself.
  if (extra <= 0 || i + extra >= s.size()) {
    ++i;
    return b0;
  }
  uint32_t cp = b0 & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) {
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      ++i;
      return b0;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  i += 1 + extra;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; });
}

std::vector<size_t> code_point_offsets(std::string_view s) {
  std::vector<size_t> offsets;
  offsets.reserve(s.size() + 1);
  size_t i = 0;
  while (i < s.size()) {
    offsets.push_back(i);
    next_code_point(s, i);
  }
  offsets.push_back(s.size());
  return offsets;
}

size_t length(std::string_view s) {
  if (is_ascii(s)) return s.size();
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) next_code_point(s, i);
  return n;
}

bool is_space(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

namespace {

// Code points of s with their byte offsets: the shape [n] of (offset, code point).
struct Decoded {
  std::vector<size_t> offset;  // [n + 1]: byte offset of each code point, then s.size()
  std::vector<uint32_t> cp;    // [n]
};

Decoded decode(std::string_view s) {
  Decoded d;
  size_t i = 0;
  while (i < s.size()) {
    d.offset.push_back(i);
    d.cp.push_back(next_code_point(s, i));
  }
  d.offset.push_back(s.size());
  return d;
}

std::vector<uint32_t> code_points(std::string_view s) { return decode(s).cp; }

}  // namespace

std::string strip(std::string_view s, const std::string* chars, bool left, bool right) {
  Decoded d = decode(s);
  std::vector<uint32_t> set;
  if (chars) set = code_points(*chars);
  auto strippable = [&](uint32_t cp) {
    return chars ? std::find(set.begin(), set.end(), cp) != set.end() : is_space(cp);
  };
  size_t begin = 0, end = d.cp.size();
  if (left)
    while (begin < end && strippable(d.cp[begin])) ++begin;
  if (right)
    while (end > begin && strippable(d.cp[end - 1])) --end;
  return std::string(s.substr(d.offset[begin], d.offset[end] - d.offset[begin]));
}

std::vector<std::string> split(std::string_view s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      size_t at = s.find(*sep, start);
      if (at == std::string_view::npos) break;
      parts.emplace_back(s.substr(start, at - start));
      start = at + sep->size();
    }
    parts.emplace_back(s.substr(start));
    return parts;
  }
  Decoded d = decode(s);
  size_t i = 0, n = d.cp.size();
  while (true) {
    while (i < n && is_space(d.cp[i])) ++i;
    if (i == n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      // The rest, with its trailing whitespace stripped, is the last part.
      size_t end = n;
      while (end > i && is_space(d.cp[end - 1])) --end;
      parts.emplace_back(s.substr(d.offset[i], d.offset[end] - d.offset[i]));
      break;
    }
    size_t j = i;
    while (j < n && !is_space(d.cp[j])) ++j;
    parts.emplace_back(s.substr(d.offset[i], d.offset[j] - d.offset[i]));
    i = j;
  }
  return parts;
}

std::vector<std::string> rsplit(std::string_view s, const std::string* sep, int64_t maxsplit) {
  if (maxsplit < 0) return split(s, sep, maxsplit);
  std::vector<std::string> parts;
  if (sep) {
    size_t end = s.size();
    while (static_cast<int64_t>(parts.size()) < maxsplit) {
      if (end < sep->size()) break;
      size_t at = s.rfind(*sep, end - sep->size());
      if (at == std::string_view::npos) break;
      parts.emplace_back(s.substr(at + sep->size(), end - at - sep->size()));
      end = at;
    }
    parts.emplace_back(s.substr(0, end));
    std::reverse(parts.begin(), parts.end());
    return parts;
  }
  Decoded d = decode(s);
  size_t j = d.cp.size();
  while (true) {
    while (j > 0 && is_space(d.cp[j - 1])) --j;
    if (j == 0) break;
    if (static_cast<int64_t>(parts.size()) == maxsplit) {
      size_t begin = 0;
      while (begin < j && is_space(d.cp[begin])) ++begin;
      parts.emplace_back(s.substr(d.offset[begin], d.offset[j] - d.offset[begin]));
      break;
    }
    size_t i = j;
    while (i > 0 && !is_space(d.cp[i - 1])) --i;
    parts.emplace_back(s.substr(d.offset[i], d.offset[j] - d.offset[i]));
    j = i;
  }
  std::reverse(parts.begin(), parts.end());
  return parts;
}

std::vector<std::string> splitlines(std::string_view s, bool keepends) {
  std::vector<std::string> lines;
  Decoded d = decode(s);
  size_t start = 0, n = d.cp.size();
  for (size_t i = 0; i < n; ++i) {
    uint32_t c = d.cp[i];
    bool is_break = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                    c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!is_break) continue;
    size_t end_of_break = i + 1;
    if (c == '\r' && i + 1 < n && d.cp[i + 1] == '\n') end_of_break = i + 2;
    size_t line_end = keepends ? end_of_break : i;
    lines.emplace_back(s.substr(d.offset[start], d.offset[line_end] - d.offset[start]));
    start = end_of_break;
    i = end_of_break - 1;
  }
  if (start < n) lines.emplace_back(s.substr(d.offset[start]));
  return lines;
}

std::string replace(std::string_view s, std::string_view old, std::string_view replacement, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts the replacement before every code point and at the end.
    Decoded d = decode(s);
    int64_t done = 0;
    for (size_t i = 0; i <= d.cp.size(); ++i) {
      if (count < 0 || done < count) {
        out += replacement;
        ++done;
      }
      if (i < d.cp.size()) out += s.substr(d.offset[i], d.offset[i + 1] - d.offset[i]);
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t at = s.find(old, start);
    if (at == std::string_view::npos) break;
    out += s.substr(start, at - start);
    out += replacement;
    start = at + old.size();
    ++done;
  }
  out += s.substr(start);
  return out;
}

size_t count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return length(s) + 1;
  size_t n = 0;
  for (size_t at = s.find(sub); at != std::string_view::npos; at = s.find(sub, at + sub.size())) ++n;
  return n;
}

namespace {

char ascii_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }
char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// Unicode simple case mapping from the C library's UTF-8 locale (one code point to one; Python's few
// one-to-many mappings such as "ß" -> "SS" are not reproduced). Without that locale: ASCII only.
locale_t unicode_locale() {
  static const locale_t locale = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
    if (!l) l = newlocale(LC_CTYPE_MASK, "en_US.UTF-8", static_cast<locale_t>(nullptr));
    return l;
  }();
  return locale;
}

uint32_t map_case(uint32_t cp, bool to_upper) {
  if (cp < 0x80) return static_cast<uint8_t>(to_upper ? ascii_upper(static_cast<char>(cp)) : ascii_lower(static_cast<char>(cp)));
  locale_t l = unicode_locale();
  if (!l) return cp;
  return static_cast<uint32_t>(to_upper ? towupper_l(static_cast<wint_t>(cp), l) : towlower_l(static_cast<wint_t>(cp), l));
}

}  // namespace

bool is_word_char(uint32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 32) >= 'a' && (cp | 32) <= 'z') || cp == '_';
  locale_t l = unicode_locale();
  return l ? iswalnum_l(static_cast<wint_t>(cp), l) != 0 : !is_space(cp);
}

namespace {

bool is_cased_letter(uint32_t cp) { return map_case(cp, true) != cp || map_case(cp, false) != cp; }

// Rewrites each code point of s; `upper_at(i, cp)` says whether the i-th code point goes to upper case.
template <class UpperAt>
std::string recase(std::string_view s, UpperAt&& upper_at) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0, index = 0;
  while (i < s.size()) {
    size_t start = i;
    uint32_t cp = next_code_point(s, i);
    uint32_t mapped = map_case(cp, upper_at(index++, cp));
    if (mapped == cp) {
      out.append(s.data() + start, i - start);  // unchanged bytes stay as they were (even invalid UTF-8)
    } else {
      append_utf8(out, mapped);
    }
  }
  return out;
}

}  // namespace

std::string upper(std::string_view s) {
  return recase(s, [](size_t, uint32_t) { return true; });
}

std::string lower(std::string_view s) {
  return recase(s, [](size_t, uint32_t) { return false; });
}

std::string capitalize(std::string_view s) {
  return recase(s, [](size_t index, uint32_t) { return index == 0; });
}

std::string title(std::string_view s) {
  // str.title: a cased letter after an uncased character starts a word.
  bool previous_cased = false;
  return recase(s, [&](size_t, uint32_t cp) {
    bool upper = !previous_cased;
    previous_cased = is_cased_letter(cp);
    return upper;
  });
}

std::string repr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = next_code_point(s, i);
    static const char* hex = "0123456789abcdef";
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) {
      out += "\\x";
      out += hex[cp >> 4];
      out += hex[cp & 15];
    } else {
      append_utf8(out, cp);
    }
  }
  out += quote;
  return out;
}

}  // namespace kvtier::jinja::py
