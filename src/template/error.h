// The interpreter's error: thrown inside the library, caught at the ChatTemplate API and turned into a
// Result with "template:LINE:COLUMN: Kind: message".
#pragma once

#include <string>
#include <utility>

namespace kvtier::jinja {

// A position in the template source, 1-based; line 0 means "not known yet".
struct SourcePos {
  int line = 0;
  int column = 0;
};

class TemplateError {
 public:
  // kind: Python's exception name as jinja2 reports it (TemplateSyntaxError, UndefinedError, TypeError,
  // SecurityError, TemplateError for raise_exception, LimitError for the sandbox's bounds).
  TemplateError(std::string kind, std::string message, SourcePos pos = {})
      : kind_(std::move(kind)), message_(std::move(message)), pos_(pos) {}
  const std::string& kind() const { return kind_; }
  const std::string& message() const { return message_; }
  SourcePos pos() const { return pos_; }
  void set_pos_if_unknown(SourcePos pos) {
    if (pos_.line == 0) pos_ = pos;
  }
  // One line: line breaks inside the message (a key or value quoted from the template) are escaped.
  std::string describe() const {
    std::string text = "template:" + std::to_string(pos_.line) + ":" + std::to_string(pos_.column) + ": " + kind_ + ": ";
    for (char c : message_) {
      if (c == '\n') {
        text += "\\n";
      } else if (c == '\r') {
        text += "\\r";
      } else {
        text += c;
      }
    }
    return text;
  }

 private:
  std::string kind_;
  std::string message_;
  SourcePos pos_;
};

[[noreturn]] inline void type_error(std::string message) { throw TemplateError("TypeError", std::move(message)); }
[[noreturn]] inline void value_error(std::string message) { throw TemplateError("ValueError", std::move(message)); }

}  // namespace kvtier::jinja
