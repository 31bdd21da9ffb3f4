// Splits a template into text and tag tokens, applying whitespace control as jinja2's lexer does with
// trim_blocks=True and lstrip_blocks=True: `{%-`/`-%}` strip all whitespace on that side, a block or
// comment tag drops the newline right after it, and a block or comment tag alone on its line drops the
// indentation before it. Comments vanish here; `{% raw %}` bodies become text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "template/error.h"

namespace kvtier::jinja {

enum class TokenType {
  Text,         // template text between tags
  VarBegin,     // {{
  VarEnd,       // }}
  BlockBegin,   // {%
  BlockEnd,     // %}
  Name,         // identifiers, keywords included
  String,       // a string literal, escapes already decoded
  Integer,
  Float,
  Operator,     // + - * / // % ** ~ == != < <= > >= = . , : | ( ) [ ] { }
  End,
};

struct Token {
  TokenType type;
  std::string text;
  SourcePos pos;
};

// Throws TemplateError (TemplateSyntaxError) on an unterminated tag, string or comment, an unknown
// character, or unbalanced brackets.
std::vector<Token> tokenize(std::string_view source);

}  // namespace kvtier::jinja
