// The tree-walking interpreter: scopes, statements, expressions, and the sandbox's bounds.
#pragma once

#include <ctime>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvtier/chat_template.h"
#include "template/ast.h"
#include "template/error.h"
#include "template/value.h"

namespace kvtier::jinja {

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Binds arguments to parameters by Python's rules: the i-th positional argument or the keyword of the
// same name. Returns one value per parameter, undefined where none was given. Throws TypeError for too
// many positional arguments, unknown keywords, or fewer than `required` parameters given.
std::vector<Value> bind_args(const CallArgs& args, const char* function, std::initializer_list<const char*> params,
                             size_t required = 0);

// Variables of one frame: the globals, the template's top level, one loop iteration, one macro call.
// Lookups fall through to the parent, so a macro sees its defining frame's variables as they are when
// it runs (Python closures bind late, and jinja2 compiles macros to closures).
class Scope {
 public:
  explicit Scope(std::shared_ptr<Scope> parent) : parent_(std::move(parent)) {}
  const Value* find(const std::string& name) const;
  void set(const std::string& name, Value value);

 private:
  std::shared_ptr<Scope> parent_;
  std::vector<std::pair<std::string, Value>> vars_;  // frames hold few names: a vector beats a hash map
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  Interpreter(const TemplateRenderOptions& options, std::tm now);

  // Renders the program with `context`'s entries as variables (context is a dict value).
  std::string render(const Program& program, const Value& context);

  // ---- used by filters, tests, methods and globals ----
  Value call(const Value& callee, CallArgs& args);
  Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
  bool apply_test(const std::string& name, const Value& input, CallArgs& args);
  Value getattr(const Value& object, const std::string& name);
  Value getitem(const Value& object, const Value& key);
  // The items a for loop would visit (a generator is consumed).
  std::vector<Value> iterate(const Value& v);
  // Strings and lists built during the render go through these, so their sizes stay within the bounds.
  Value new_string(std::string s);
  Value new_list(std::vector<Value> items, SeqKind kind = SeqKind::List);
  void charge_bytes(size_t n);
  void check_length(size_t bytes);
  NamespaceData* new_namespace();
  const std::tm& now() const { return now_; }
  size_t max_string_bytes() const { return options_.max_output_bytes; }

 private:
  enum class Flow { Normal, Break, Continue };

  Flow exec_body(const Body& body, const ScopePtr& scope, std::string& out);
  Flow exec(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  Flow exec_for(const ForStmt& stmt, const ScopePtr& scope, std::string& out);
  void assign(const AssignTarget& target, const Value& value, const ScopePtr& scope);
  Value apply_filter_chain(const Expr& chain, const Value& body_text, const ScopePtr& scope);
  Value define_macro(const std::string& name, const std::vector<MacroParam>* params, const Body* body,
                     const ScopePtr& scope);
  Value call_macro(const std::string& name, const std::vector<MacroParam>& params, const Body& body,
                   const ScopePtr& defining_scope, CallArgs& args);

  Value eval(const Expr& expr, const ScopePtr& scope);
  CallArgs eval_args(const Arguments& args, const ScopePtr& scope);
  Value eval_binary(const BinaryExpr& e, const ScopePtr& scope);
  Value eval_compare(const CompareExpr& e, const ScopePtr& scope);
  Value eval_slice(const Value& object, const SliceExpr& slice, const ScopePtr& scope);

  void append(std::string& out, std::string_view text);
  void charge_step();
  void check_stack();

  TemplateRenderOptions options_;
  std::tm now_;
  size_t steps_ = 0;
  size_t built_bytes_ = 0;
  size_t depth_ = 0;
  const char* stack_base_ = nullptr;
  std::vector<std::unique_ptr<NamespaceData>> namespaces_;  // namespace() objects live for the render
};

// The error for using an undefined value where a value is needed (UndefinedError, or SecurityError for a
// method the sandbox refused).
[[noreturn]] void raise_undefined(const Value& v);

// Python's binary operators on values (+ - * / // % **), as the interpreter applies them.
Value binary_arithmetic(Interpreter& in, BinaryOp op, const Value& a, const Value& b);
// `a in b`.
bool contains(Interpreter& in, const Value& container, const Value& item);

// ---- builtins (filters.cpp, methods.cpp) ----
using FilterFunction = Value (*)(Interpreter&, const Value& input, CallArgs& args);
using TestFunction = bool (*)(Interpreter&, const Value& input, CallArgs& args);
FilterFunction find_filter(const std::string& name);
TestFunction find_test(const std::string& name);
// A str/dict/list method bound to `object` (undefined when the type has no such method; a mutating method
// gives an undefined value that fails, when called, with the sandbox's SecurityError).
std::optional<Value> find_method(Interpreter& in, const Value& object, const std::string& name);
void install_globals(Scope& globals);

}  // namespace kvtier::jinja
