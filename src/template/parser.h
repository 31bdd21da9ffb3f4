// Recursive-descent parser of jinja2's grammar (the statements and expressions chat templates use).
#pragma once

#include <memory>
#include <string_view>

#include "template/ast.h"

namespace kvtier::jinja {

// Throws TemplateError (TemplateSyntaxError) naming the position of the first problem.
std::unique_ptr<Program> parse_program(std::string_view source);

}  // namespace kvtier::jinja
