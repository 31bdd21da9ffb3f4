// Python's str semantics over UTF-8 bytes: lengths, indices and slices count code points; whitespace is
// Python's (str.isspace); case mapping covers ASCII only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvtier::jinja::py {

// Decodes the code point at s[i] and advances i; invalid bytes decode as themselves (one byte each).
uint32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);
// Byte offsets of each code point, plus s.size() at the end: [n_code_points + 1].
std::vector<size_t> code_point_offsets(std::string_view s);
size_t length(std::string_view s);
bool is_ascii(std::string_view s);

bool is_space(uint32_t cp);
// Python's regex \w: letters, digits (Unicode, from the C library's UTF-8 locale) and '_'.
bool is_word_char(uint32_t cp);
// str.strip()/lstrip()/rstrip(); chars == nullptr strips whitespace, else any code point of *chars.
std::string strip(std::string_view s, const std::string* chars, bool left, bool right);
// str.split(sep, maxsplit): sep == nullptr splits on whitespace runs.
std::vector<std::string> split(std::string_view s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> rsplit(std::string_view s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> splitlines(std::string_view s, bool keepends);
std::string replace(std::string_view s, std::string_view old, std::string_view replacement, int64_t count);
size_t count(std::string_view s, std::string_view sub);

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string capitalize(std::string_view s);  // str.capitalize
std::string title(std::string_view s);       // str.title

// Python's repr of a str: single quotes unless the text has ' and no ", escapes for control characters.
std::string repr(std::string_view s);

}  // namespace kvtier::jinja::py
