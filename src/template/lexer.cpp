#include "template/lexer.h"

#include <algorithm>
#include <cstring>

#include "template/py_string.h"

namespace kvtier::jinja {

namespace {

[[noreturn]] void syntax_error(std::string message, SourcePos pos) {
  throw TemplateError("TemplateSyntaxError", std::move(message), pos);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python's "unicode-escape" decoding of a string literal's body, as jinja2 applies it.
std::string decode_escapes(std::string_view body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\' || i + 1 == body.size()) {
      out += c;
      continue;
    }
    char e = body[++i];
    switch (e) {
      case '\n': break;  // line continuation
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x':
      case 'u':
      case 'U': {
        size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        bool ok = i + n < body.size();
        for (size_t k = 1; ok && k <= n; ++k) {
          int h = hex_value(body[i + k]);
          if (h < 0) ok = false;
          cp = cp * 16 + static_cast<uint32_t>(h < 0 ? 0 : h);
        }
        if (!ok || cp > 0x10FFFF) {
          throw TemplateError("TemplateSyntaxError", std::string("truncated \\") + e + " escape in a string");
        }
        py::append_utf8(out, cp);
        i += n;
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            cp = cp * 8 + static_cast<uint32_t>(body[++i] - '0');
          py::append_utf8(out, cp);
        } else {
          out += '\\';  // unknown escapes stay as written
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view raw) {
    // jinja2 reads "\r\n" and "\r" as "\n" and drops one trailing newline (keep_trailing_newline=False).
    source_.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        source_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        source_ += raw[i];
      }
    }
    if (!source_.empty() && source_.back() == '\n') source_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < source_.size(); ++i)
      if (source_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;  // the last thing consumed ended a line (or nothing was consumed yet)
    while (pos < source_.size()) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit(TokenType::Text, source_.substr(pos), pos);
        break;
      }
      char type = source_[tag + 1];  // '{', '%' or '#'
      char sign = tag + 2 < source_.size() ? source_[tag + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      size_t after_sign = tag + 2 + (sign ? 1 : 0);
      size_t raw_body = type == '%' ? match_raw_begin(after_sign) : std::string::npos;

      std::string text = source_.substr(pos, tag - pos);
      apply_left_strip(text, sign, /*is_variable=*/type == '{', line_starting);
      emit(TokenType::Text, std::move(text), pos);

      if (raw_body != std::string::npos) {
        pos = lex_raw(raw_body, line_starting);
      } else if (type == '#') {
        pos = lex_comment(after_sign, tag, line_starting);
      } else {
        pos = lex_tag(type == '%', tag, after_sign, line_starting);
      }
    }
    tokens_.push_back(Token{TokenType::End, "", position(source_.size())});
    return std::move(tokens_);
  }

 private:
  SourcePos position(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = static_cast<size_t>(it - line_starts_.begin());
    return SourcePos{static_cast<int>(line), static_cast<int>(offset - line_starts_[line - 1] + 1)};
  }

  void emit(TokenType type, std::string text, size_t offset) {
    if (type == TokenType::Text && text.empty()) return;
    tokens_.push_back(Token{type, std::move(text), position(offset)});
  }

  size_t find_tag(size_t from) const {
    for (size_t p = source_.find('{', from); p != std::string::npos; p = source_.find('{', p + 1)) {
      if (p + 1 < source_.size() && (source_[p + 1] == '{' || source_[p + 1] == '%' || source_[p + 1] == '#'))
        return p;
    }
    return std::string::npos;
  }

  // Python whitespace (\s) at source_[p], as a byte length (0 when not whitespace).
  size_t space_at(size_t p) const {
    if (p >= source_.size()) return 0;
    size_t next = p;
    uint32_t cp = py::next_code_point(source_, next);
    return py::is_space(cp) ? next - p : 0;
  }
  size_t skip_space(size_t p) const {
    for (size_t n; (n = space_at(p)) > 0;) p += n;
    return p;
  }

  // `{% raw %}` (the tag's opening already matched up to the sign): the offset where the raw body starts.
  size_t match_raw_begin(size_t p) const {
    p = skip_space(p);
    if (source_.compare(p, 3, "raw") != 0) return std::string::npos;
    p = skip_space(p + 3);
    if (source_.compare(p, 3, "-%}") == 0) return skip_space(p + 3);
    if (source_.compare(p, 2, "%}") == 0) return p + 2;
    return std::string::npos;
  }

  // Whitespace control on the text before a tag: `-` strips all trailing whitespace; otherwise, with
  // lstrip_blocks, a block/comment tag preceded on its line only by whitespace takes that whitespace.
  static void apply_left_strip(std::string& text, char sign, bool is_variable, bool line_starting) {
    if (sign == '-') {
      text = py::strip(text, nullptr, false, true);
      return;
    }
    if (sign == '+' || is_variable) return;
    size_t line_start = text.rfind('\n');
    line_start = line_start == std::string::npos ? 0 : line_start + 1;
    if (line_start == 0 && !line_starting) return;
    std::string_view tail(text.data() + line_start, text.size() - line_start);
    if (!tail.empty() && py::strip(tail, nullptr, true, false).empty()) text.resize(line_start);
  }

  // After a block or comment end: `-` strips the whitespace that follows, `+` keeps it, otherwise
  // trim_blocks drops one newline. Returns the offset after what was consumed.
  size_t after_block_end(size_t end_of_tag, char sign, bool& line_starting) const {
    size_t p = end_of_tag;
    if (sign == '-') {
      p = skip_space(p);
    } else if (sign != '+' && p < source_.size() && source_[p] == '\n') {
      ++p;
    }
    line_starting = p > 0 && source_[p - 1] == '\n';
    return p;
  }

  size_t lex_comment(size_t body, size_t tag, bool& line_starting) {
    size_t close = source_.find("#}", body);
    if (close == std::string::npos) syntax_error("Missing end of comment tag", position(tag));
    char sign = close > body && (source_[close - 1] == '-' || source_[close - 1] == '+') ? source_[close - 1] : '\0';
    return after_block_end(close + 2, sign, line_starting);
  }

  size_t lex_raw(size_t body, bool& line_starting) {
    // The raw body runs to the first `{% endraw %}` (with optional signs and whitespace).
    line_starting = body > 0 && source_[body - 1] == '\n';
    for (size_t p = source_.find("{%", body); p != std::string::npos; p = source_.find("{%", p + 1)) {
      char sign = p + 2 < source_.size() && (source_[p + 2] == '-' || source_[p + 2] == '+') ? source_[p + 2] : '\0';
      size_t q = skip_space(p + 2 + (sign ? 1 : 0));
      if (source_.compare(q, 6, "endraw") != 0) continue;
      q = skip_space(q + 6);
      char end_sign = '\0';
      if (q < source_.size() && (source_[q] == '-' || source_[q] == '+')) end_sign = source_[q++];
      if (source_.compare(q, 2, "%}") != 0) continue;
      std::string text = source_.substr(body, p - body);
      apply_left_strip(text, sign, false, line_starting);
      emit(TokenType::Text, std::move(text), body);
      return after_block_end(q + 2, end_sign, line_starting);
    }
    syntax_error("Missing end of raw directive", position(body));
  }

  size_t lex_tag(bool is_block, size_t tag, size_t p, bool& line_starting) {
    emit(is_block ? TokenType::BlockBegin : TokenType::VarBegin, is_block ? "{%" : "{{", tag);
    std::vector<char> balancing;  // the closing brackets expected, innermost last
    while (true) {
      p = skip_space(p);
      if (p >= source_.size()) syntax_error(is_block ? "unexpected end of template, expected '%}'"
                                                     : "unexpected end of template, expected '}}'",
                                            position(tag));
      if (balancing.empty()) {
        if (is_block) {
          if (source_.compare(p, 3, "-%}") == 0 || source_.compare(p, 3, "+%}") == 0) {
            emit(TokenType::BlockEnd, "%}", p);
            return after_block_end(p + 3, source_[p], line_starting);
          }
          if (source_.compare(p, 2, "%}") == 0) {
            emit(TokenType::BlockEnd, "%}", p);
            return after_block_end(p + 2, '\0', line_starting);
          }
        } else {
          if (source_.compare(p, 3, "-}}") == 0) {
            emit(TokenType::VarEnd, "}}", p);
            size_t next = skip_space(p + 3);
            line_starting = source_[next - 1] == '\n';
            return next;
          }
          if (source_.compare(p, 2, "}}") == 0) {
            emit(TokenType::VarEnd, "}}", p);
            line_starting = false;
            return p + 2;
          }
        }
      }
      p = lex_expression_token(p, balancing);
    }
  }

  size_t digits_with_underscores(size_t p) const {
    // (\d+_)*\d+ ; returns p unchanged when there is no digit at p.
    size_t q = p;
    while (q < source_.size() && is_digit(source_[q])) {
      while (q < source_.size() && is_digit(source_[q])) ++q;
      if (q + 1 < source_.size() && source_[q] == '_' && is_digit(source_[q + 1])) ++q;
    }
    return q;
  }

  size_t match_float(size_t p) const {
    if (p > 0 && source_[p - 1] == '.') return p;
    size_t q = digits_with_underscores(p);
    if (q == p) return p;
    size_t fraction_end = q;
    if (q + 1 < source_.size() && source_[q] == '.' && is_digit(source_[q + 1]))
      fraction_end = digits_with_underscores(q + 1);
    size_t e = fraction_end;
    if (e < source_.size() && (source_[e] == 'e' || source_[e] == 'E')) {
      size_t d = e + 1;
      if (d < source_.size() && (source_[d] == '+' || source_[d] == '-')) ++d;
      size_t exp_end = digits_with_underscores(d);
      if (exp_end > d) return exp_end;
    }
    return fraction_end > q ? fraction_end : p;
  }

  size_t lex_expression_token(size_t p, std::vector<char>& balancing) {
    char c = source_[p];
    if (is_digit(c)) {
      size_t end = match_float(p);
      if (end > p) {
        std::string text;
        for (size_t i = p; i < end; ++i)
          if (source_[i] != '_') text += source_[i];
        emit(TokenType::Float, std::move(text), p);
        return end;
      }
      end = p + 1;
      if (c != '0') end = digits_with_underscores(p);
      std::string text;
      for (size_t i = p; i < end; ++i)
        if (source_[i] != '_') text += source_[i];
      emit(TokenType::Integer, std::move(text), p);
      return end;
    }
    if (is_name_start(c)) {
      size_t end = p;
      while (end < source_.size() && is_name_char(source_[end])) ++end;
      emit(TokenType::Name, source_.substr(p, end - p), p);
      return end;
    }
    if (c == '\'' || c == '"') {
      size_t q = p + 1;
      while (q < source_.size() && source_[q] != c) q += source_[q] == '\\' ? 2 : 1;
      if (q >= source_.size()) syntax_error("unterminated string", position(p));
      try {
        emit(TokenType::String, decode_escapes(std::string_view(source_).substr(p + 1, q - p - 1)), p);
      } catch (TemplateError& e) {
        e.set_pos_if_unknown(position(p));
        throw;
      }
      return q + 1;
    }
    static const char* kTwoCharOperators[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : kTwoCharOperators) {
      if (source_.compare(p, 2, op) == 0) {
        emit(TokenType::Operator, op, p);
        return p + 2;
      }
    }
    if (std::strchr("+-*/%~<>=.,:|()[]{};", c) == nullptr || c == '\0')
      syntax_error(std::string("unexpected char '") + c + "'", position(p));
    if (c == '(' || c == '[' || c == '{') balancing.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    if (c == ')' || c == ']' || c == '}') {
      if (balancing.empty()) syntax_error(std::string("unexpected '") + c + "'", position(p));
      if (balancing.back() != c)
        syntax_error(std::string("unexpected '") + c + "', expected '" + balancing.back() + "'", position(p));
      balancing.pop_back();
    }
    emit(TokenType::Operator, std::string(1, c), p);
    return p + 1;
  }

  std::string source_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) { return Lexer(source).run(); }

}  // namespace kvtier::jinja
