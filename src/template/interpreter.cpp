#include "template/interpreter.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "template/py_string.h"

namespace kvtier::jinja {

namespace {

// The interpreter recurses over the tree and into macro calls; past this much stack it stops with an
// error instead of overflowing (max_depth bounds macro nesting; this bounds everything together).
constexpr size_t kStackBudgetBytes = 2u << 20;

std::string object_name(const Value& v) { return std::string("'") + v.type_name() + " object'"; }

}  // namespace

void raise_undefined(const Value& v) {
  static const std::string kSecurity = "SecurityError: ";
  const std::string& hint = v.undefined_hint();
  if (hint.compare(0, kSecurity.size(), kSecurity) == 0)
    throw TemplateError("SecurityError", hint.substr(kSecurity.size()));
  throw TemplateError("UndefinedError", hint);
}

std::vector<Value> bind_args(const CallArgs& args, const char* function, std::initializer_list<const char*> params,
                             size_t required) {
  std::vector<Value> bound(params.size());
  std::vector<bool> given(params.size(), false);
  if (args.positional.size() > params.size())
    type_error(std::string(function) + "() takes at most " + std::to_string(params.size()) + " arguments (" +
               std::to_string(args.positional.size()) + " given)");
  for (size_t i = 0; i < args.positional.size(); ++i) {
    bound[i] = args.positional[i];
    given[i] = true;
  }
  for (const auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (const char* p : params) {
      if (key == p) break;
      ++i;
    }
    if (i == params.size()) type_error(std::string(function) + "() got an unexpected keyword argument '" + key + "'");
    if (given[i]) type_error(std::string(function) + "() got multiple values for argument '" + key + "'");
    bound[i] = value;
    given[i] = true;
  }
  for (size_t i = 0; i < required; ++i)
    if (!given[i]) type_error(std::string(function) + "() missing required argument '" + *(params.begin() + i) + "'");
  return bound;
}

const Value* Scope::find(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent_.get()) {
    for (const auto& [n, v] : s->vars_)
      if (n == name) return &v;
  }
  return nullptr;
}

void Scope::set(const std::string& name, Value value) {
  for (auto& [n, v] : vars_) {
    if (n == name) {
      v = std::move(value);
      return;
    }
  }
  vars_.emplace_back(name, std::move(value));
}

Interpreter::Interpreter(const TemplateRenderOptions& options, std::tm now) : options_(options), now_(now) {}

std::string Interpreter::render(const Program& program, const Value& context) {
  char stack_marker = 0;
  stack_base_ = &stack_marker;
  auto globals = std::make_shared<Scope>(nullptr);
  install_globals(*globals);
  if (context.is_dict())
    for (const auto& [k, v] : context.as_dict().entries)
      if (k.is_string()) globals->set(k.as_string(), v);
  auto top = std::make_shared<Scope>(globals);
  std::string out;
  exec_body(program.body, top, out);
  return out;
}

// ---- bounds ----

void Interpreter::charge_step() {
  if (++steps_ > options_.max_steps)
    throw TemplateError("LimitError", "more than " + std::to_string(options_.max_steps) +
                                          " loop iterations and macro calls (max_steps)");
}

void Interpreter::charge_bytes(size_t n) {
  built_bytes_ = n > options_.max_built_bytes - std::min(built_bytes_, options_.max_built_bytes)
                     ? options_.max_built_bytes + 1
                     : built_bytes_ + n;
  if (built_bytes_ > options_.max_built_bytes)
    throw TemplateError("LimitError", "the template built more than " + std::to_string(options_.max_built_bytes) +
                                          " bytes of strings and lists (max_built_bytes)");
}

void Interpreter::check_length(size_t bytes) {
  if (bytes > options_.max_output_bytes)
    throw TemplateError("LimitError", "a string or list of more than " + std::to_string(options_.max_output_bytes) +
                                          " bytes (max_output_bytes)");
}

void Interpreter::check_stack() {
  char marker = 0;
  if (static_cast<size_t>(stack_base_ - &marker) > kStackBudgetBytes)
    throw TemplateError("LimitError", "template recursion too deep");
}

Value Interpreter::new_string(std::string s) {
  check_length(s.size());
  charge_bytes(s.size());
  return Value(std::move(s));
}

Value Interpreter::new_list(std::vector<Value> items, SeqKind kind) {
  charge_bytes(items.size() * sizeof(Value));
  return Value::list(std::move(items), kind);
}

NamespaceData* Interpreter::new_namespace() {
  charge_bytes(sizeof(NamespaceData));
  namespaces_.push_back(std::make_unique<NamespaceData>());
  return namespaces_.back().get();
}

void Interpreter::append(std::string& out, std::string_view text) {
  if (out.size() + text.size() > options_.max_output_bytes)
    throw TemplateError("LimitError", "output longer than " + std::to_string(options_.max_output_bytes) +
                                          " bytes (max_output_bytes)");
  charge_bytes(text.size());
  out += text;
}

// ---- statements ----

Interpreter::Flow Interpreter::exec_body(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const StmtPtr& stmt : body) {
    Flow flow = exec(*stmt, scope, out);
    if (flow != Flow::Normal) return flow;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  check_stack();
  try {
    if (const auto* s = std::get_if<TextStmt>(&stmt.node)) {
      append(out, s->text);
    } else if (const auto* s = std::get_if<OutputStmt>(&stmt.node)) {
      Value v = eval(*s->expr, scope);
      append(out, v.is_string() ? std::string_view(v.as_string()) : std::string_view(to_str(v)));
    } else if (const auto* s = std::get_if<IfStmt>(&stmt.node)) {
      for (const auto& [condition, body] : s->branches)
        if (eval(*condition, scope).truthy()) return exec_body(body, scope, out);
      return exec_body(s->else_body, scope, out);
    } else if (const auto* s = std::get_if<ForStmt>(&stmt.node)) {
      return exec_for(*s, scope, out);
    } else if (const auto* s = std::get_if<SetStmt>(&stmt.node)) {
      assign(s->target, eval(*s->value, scope), scope);
    } else if (const auto* s = std::get_if<SetBlockStmt>(&stmt.node)) {
      std::string text;
      exec_body(s->body, std::make_shared<Scope>(scope), text);
      Value value = s->filter ? apply_filter_chain(*s->filter, Value(std::move(text)), scope) : Value(std::move(text));
      assign(s->target, value, scope);
    } else if (const auto* s = std::get_if<MacroStmt>(&stmt.node)) {
      scope->set(s->name, define_macro(s->name, &s->params, &s->body, scope));
    } else if (const auto* s = std::get_if<CallBlockStmt>(&stmt.node)) {
      const auto& call = std::get<CallExpr>(s->call->node);
      Value callee = eval(*call.callee, scope);
      CallArgs args = eval_args(call.args, scope);
      args.keyword.emplace_back("caller", define_macro("caller", &s->caller_params, &s->body, scope));
      Value result = this->call(callee, args);
      append(out, to_str(result));
    } else if (const auto* s = std::get_if<FilterBlockStmt>(&stmt.node)) {
      std::string text;
      exec_body(s->body, std::make_shared<Scope>(scope), text);
      append(out, to_str(apply_filter_chain(*s->filter, Value(std::move(text)), scope)));
    } else if (const auto* s = std::get_if<ScopedBlockStmt>(&stmt.node)) {
      if (!s->new_scope) return exec_body(s->body, scope, out);
      auto inner = std::make_shared<Scope>(scope);
      for (const auto& [target, value] : s->assignments) assign(target, eval(*value, scope), inner);
      return exec_body(s->body, inner, out);
    } else if (std::holds_alternative<BreakStmt>(stmt.node)) {
      return Flow::Break;
    } else if (std::holds_alternative<ContinueStmt>(stmt.node)) {
      return Flow::Continue;
    }
  } catch (TemplateError& e) {
    e.set_pos_if_unknown(stmt.pos);
    throw;
  }
  return Flow::Normal;
}

Value Interpreter::apply_filter_chain(const Expr& chain, const Value& body_text, const ScopePtr& scope) {
  check_stack();
  const auto& f = std::get<FilterExpr>(chain.node);
  Value input = f.input ? apply_filter_chain(*f.input, body_text, scope) : body_text;
  CallArgs args = eval_args(f.args, scope);
  return apply_filter(f.name, input, args);
}

void Interpreter::assign(const AssignTarget& target, const Value& value, const ScopePtr& scope) {
  if (!target.attribute.empty()) {
    const Value* object = scope->find(target.names[0]);
    if (!object || object->kind() != Kind::Namespace)
      throw TemplateError("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
    DictData& attributes = object->as_namespace().attributes;
    for (auto& [k, v] : attributes.entries) {
      if (k.as_string() == target.attribute) {
        v = value;
        return;
      }
    }
    attributes.entries.emplace_back(Value(target.attribute), value);
    return;
  }
  if (!target.is_tuple) {
    scope->set(target.names[0], value);
    return;
  }
  std::vector<Value> items = iterate(value);
  if (items.size() != target.names.size())
    value_error(std::string(items.size() < target.names.size() ? "not enough" : "too many") +
                " values to unpack (expected " + std::to_string(target.names.size()) + ", got " +
                std::to_string(items.size()) + ")");
  for (size_t i = 0; i < items.size(); ++i) scope->set(target.names[i], items[i]);
}

Interpreter::Flow Interpreter::exec_for(const ForStmt& stmt, const ScopePtr& scope, std::string& out) {
  std::vector<Value> items = iterate(eval(*stmt.iterable, scope));
  if (stmt.condition) {
    std::vector<Value> kept;
    for (Value& item : items) {
      charge_step();
      auto filter_scope = std::make_shared<Scope>(scope);
      assign(stmt.target, item, filter_scope);
      if (eval(*stmt.condition, filter_scope).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    exec_body(stmt.else_body, std::make_shared<Scope>(scope), out);
    return Flow::Normal;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  auto cycle_index = std::make_shared<int64_t>(0);
  Value cycle = Value::callable("cycle", [cycle_index](Interpreter&, CallArgs& args) -> Value {
    if (args.positional.empty()) type_error("no items for cycling given");
    return args.positional[static_cast<size_t>(*cycle_index) % args.positional.size()];
  });
  for (int64_t i = 0; i < n; ++i) {
    charge_step();
    *cycle_index = i;
    auto body_scope = std::make_shared<Scope>(scope);
    assign(stmt.target, items[static_cast<size_t>(i)], body_scope);
    // The loop object, as a dict of its attributes (the key strings are shared by every iteration).
    static const Value kKeys[] = {Value("index"), Value("index0"), Value("revindex"), Value("revindex0"),
                                  Value("first"), Value("last"),   Value("length"),   Value("depth"),
                                  Value("depth0"), Value("previtem"), Value("nextitem"), Value("cycle")};
    DictData loop;
    loop.entries.reserve(std::size(kKeys));
    Value values[] = {Value(i + 1), Value(i), Value(n - i), Value(n - i - 1), Value(i == 0), Value(i == n - 1),
                      Value(n), Value(1), Value(0),
                      i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("there is no previous item"),
                      i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("there is no next item"),
                      cycle};
    for (size_t k = 0; k < std::size(kKeys); ++k) loop.entries.emplace_back(kKeys[k], std::move(values[k]));
    body_scope->set("loop", Value::dict(std::move(loop)));
    Flow flow = exec_body(stmt.body, body_scope, out);
    if (flow == Flow::Break) break;
  }
  return Flow::Normal;
}

// ---- macros ----

Value Interpreter::define_macro(const std::string& name, const std::vector<MacroParam>* params, const Body* body,
                                const ScopePtr& scope) {
  // The macro refers to its defining frame weakly: a frame never owns a value that owns the frame, so no
  // reference cycle leaks. A macro called after its frame ended (smuggled out through a namespace) fails.
  std::weak_ptr<Scope> defining = scope;
  return Value::callable(
      name,
      [name, params, body, defining](Interpreter& in, CallArgs& args) -> Value {
        ScopePtr frame = defining.lock();
        if (!frame) throw TemplateError("TemplateRuntimeError", "macro '" + name + "' called after its scope ended");
        return in.call_macro(name, *params, *body, frame, args);
      },
      /*is_macro=*/true);
}

Value Interpreter::call_macro(const std::string& name, const std::vector<MacroParam>& params, const Body& body,
                              const ScopePtr& defining_scope, CallArgs& args) {
  charge_step();
  if (depth_ >= options_.max_depth)
    throw TemplateError("LimitError", "macro calls nested deeper than " + std::to_string(options_.max_depth) +
                                          " (max_depth)");
  struct DepthCount {
    size_t& depth;
    explicit DepthCount(size_t& d) : depth(d) { ++depth; }
    ~DepthCount() { --depth; }
  } count(depth_);

  auto frame = std::make_shared<Scope>(defining_scope);
  std::vector<bool> given(params.size(), false);
  std::vector<Value> varargs;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < params.size()) {
      frame->set(params[i].name, args.positional[i]);
      given[i] = true;
    } else {
      varargs.push_back(args.positional[i]);
    }
  }
  DictData kwargs;
  Value caller;
  for (auto& keyword : args.keyword) {
    const std::string& key = keyword.first;
    const Value& value = keyword.second;
    auto it = std::find_if(params.begin(), params.end(), [&](const MacroParam& p) { return p.name == key; });
    if (it != params.end()) {
      size_t i = static_cast<size_t>(it - params.begin());
      if (given[i]) type_error("macro '" + name + "' got multiple values for argument '" + key + "'");
      frame->set(key, value);
      given[i] = true;
    } else if (key == "caller") {
      caller = value;
    } else {
      kwargs.entries.emplace_back(Value(key), value);
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (given[i]) continue;
    // Defaults are evaluated in the macro's frame, so they may use the parameters before them.
    frame->set(params[i].name, params[i].default_value
                                   ? eval(*params[i].default_value, frame)
                                   : Value::undefined("parameter '" + params[i].name + "' was not provided"));
  }
  frame->set("varargs", new_list(std::move(varargs), SeqKind::Tuple));
  frame->set("kwargs", Value::dict(std::move(kwargs)));
  if (!caller.is_undefined()) frame->set("caller", caller);
  std::string out;
  exec_body(body, frame, out);
  return Value(std::move(out));
}

// ---- expressions ----

CallArgs Interpreter::eval_args(const Arguments& args, const ScopePtr& scope) {
  CallArgs out;
  for (const ExprPtr& e : args.positional) out.positional.push_back(eval(*e, scope));
  for (const auto& [key, e] : args.keyword) out.keyword.emplace_back(key, eval(*e, scope));
  if (args.star_args)
    for (Value& v : iterate(eval(*args.star_args, scope))) out.positional.push_back(std::move(v));
  if (args.star_kwargs) {
    Value d = eval(*args.star_kwargs, scope);
    if (!d.is_dict()) type_error("argument after ** must be a mapping");
    for (const auto& [k, v] : d.as_dict().entries) {
      if (!k.is_string()) type_error("keywords must be strings");
      out.keyword.emplace_back(k.as_string(), v);
    }
  }
  return out;
}

Value Interpreter::eval(const Expr& expr, const ScopePtr& scope) {
  check_stack();
  try {
    return std::visit(
        [&](const auto& node) -> Value {
          using T = std::decay_t<decltype(node)>;
          if constexpr (std::is_same_v<T, LiteralExpr>) {
            return node.value;
          } else if constexpr (std::is_same_v<T, ListExpr>) {
            std::vector<Value> items;
            items.reserve(node.items.size());
            for (const ExprPtr& e : node.items) items.push_back(eval(*e, scope));
            return new_list(std::move(items), node.is_tuple ? SeqKind::Tuple : SeqKind::List);
          } else if constexpr (std::is_same_v<T, DictExpr>) {
            DictData d;
            for (const auto& [ke, ve] : node.entries) {
              Value k = eval(*ke, scope);
              Value v = eval(*ve, scope);
              if (k.kind() == Kind::List && k.as_list().kind == SeqKind::List) type_error("unhashable type: 'list'");
              if (k.is_dict()) type_error("unhashable type: 'dict'");
              auto it = std::find_if(d.entries.begin(), d.entries.end(), [&](auto& e) { return equals(e.first, k); });
              if (it != d.entries.end()) {
                it->second = std::move(v);
              } else {
                d.entries.emplace_back(std::move(k), std::move(v));
              }
            }
            charge_bytes(d.entries.size() * 2 * sizeof(Value));
            return Value::dict(std::move(d));
          } else if constexpr (std::is_same_v<T, NameExpr>) {
            const Value* v = scope->find(node.name);
            return v ? *v : Value::undefined("'" + node.name + "' is undefined");
          } else if constexpr (std::is_same_v<T, GetAttrExpr>) {
            Value object = eval(*node.object, scope);
            return getattr(object, node.attribute);
          } else if constexpr (std::is_same_v<T, GetItemExpr>) {
            Value object = eval(*node.object, scope);
            if (const auto* slice = std::get_if<SliceExpr>(&node.index->node)) return eval_slice(object, *slice, scope);
            Value key = eval(*node.index, scope);
            return getitem(object, key);
          } else if constexpr (std::is_same_v<T, SliceExpr>) {
            throw TemplateError("TemplateSyntaxError", "a slice outside of a subscript");
          } else if constexpr (std::is_same_v<T, CallExpr>) {
            Value callee = eval(*node.callee, scope);
            CallArgs args = eval_args(node.args, scope);
            return call(callee, args);
          } else if constexpr (std::is_same_v<T, FilterExpr>) {
            Value input = eval(*node.input, scope);
            CallArgs args = eval_args(node.args, scope);
            return apply_filter(node.name, input, args);
          } else if constexpr (std::is_same_v<T, TestExpr>) {
            Value input = eval(*node.input, scope);
            CallArgs args = eval_args(node.args, scope);
            return Value(apply_test(node.name, input, args) != node.negated);
          } else if constexpr (std::is_same_v<T, UnaryExpr>) {
            Value v = eval(*node.operand, scope);
            if (node.op == UnaryOp::Not) return Value(!v.truthy());
            if (v.is_undefined()) raise_undefined(v);
            if (!v.is_number()) type_error(std::string("bad operand type for unary ") +
                                           (node.op == UnaryOp::Neg ? "-" : "+") + ": '" + v.type_name() + "'");
            if (node.op == UnaryOp::Pos) return v.is_bool() ? Value(v.integer()) : v;
            if (v.is_float()) return Value(-v.as_float());
            if (v.integer() == std::numeric_limits<int64_t>::min()) throw TemplateError("OverflowError", "integer overflow");
            return Value(-v.integer());
          } else if constexpr (std::is_same_v<T, BinaryExpr>) {
            return eval_binary(node, scope);
          } else if constexpr (std::is_same_v<T, CompareExpr>) {
            return eval_compare(node, scope);
          } else if constexpr (std::is_same_v<T, CondExpr>) {
            if (eval(*node.condition, scope).truthy()) return eval(*node.then_value, scope);
            if (node.else_value) return eval(*node.else_value, scope);
            return Value::undefined("the inline if-expression on line " + std::to_string(expr.pos.line) +
                                    " evaluated to false and no else section was defined.");
          }
        },
        expr.node);
  } catch (TemplateError& e) {
    e.set_pos_if_unknown(expr.pos);
    throw;
  }
}

Value Interpreter::eval_binary(const BinaryExpr& e, const ScopePtr& scope) {
  Value left = eval(*e.left, scope);
  if (e.op == BinaryOp::And) return left.truthy() ? eval(*e.right, scope) : left;
  if (e.op == BinaryOp::Or) return left.truthy() ? left : eval(*e.right, scope);
  Value right = eval(*e.right, scope);
  if (e.op == BinaryOp::Concat) {
    std::string s = to_str(left);
    s += to_str(right);
    return new_string(std::move(s));
  }
  return binary_arithmetic(*this, e.op, left, right);
}

Value Interpreter::eval_compare(const CompareExpr& e, const ScopePtr& scope) {
  Value left = eval(*e.first, scope);
  for (const auto& [op, operand] : e.rest) {
    Value right = eval(*operand, scope);
    bool ok = false;
    switch (op) {
      case CompareOp::Eq: ok = equals(left, right); break;
      case CompareOp::Ne: ok = !equals(left, right); break;
      case CompareOp::Lt: ok = less_than(left, right); break;
      case CompareOp::Le: ok = less_than(left, right) || equals(left, right); break;
      case CompareOp::Gt: ok = less_than(right, left); break;
      case CompareOp::Ge: ok = less_than(right, left) || equals(left, right); break;
      case CompareOp::In: ok = contains(*this, right, left); break;
      case CompareOp::NotIn: ok = !contains(*this, right, left); break;
    }
    if (!ok) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

namespace {

// Python's slice.indices(): clamps start/stop for a sequence of length n, given step.
void slice_indices(int64_t n, const Value& start_v, const Value& stop_v, const Value& step_v, int64_t& start,
                   int64_t& stop, int64_t& step) {
  auto as_index = [](const Value& v) -> int64_t {
    if (!v.is_integral()) type_error("slice indices must be integers or None");
    return v.integer();
  };
  step = step_v.is_none() || step_v.is_undefined() ? 1 : as_index(step_v);
  if (step == 0) value_error("slice step cannot be zero");
  if (step == std::numeric_limits<int64_t>::min()) step = -std::numeric_limits<int64_t>::max();
  auto clamp = [&](const Value& v, int64_t fallback) -> int64_t {
    if (v.is_none() || v.is_undefined()) return fallback;
    int64_t i = as_index(v);
    if (i < 0) {
      i = i < -n ? (step < 0 ? -1 : 0) : i + n;
    } else if (i >= n) {
      i = step < 0 ? n - 1 : n;
    }
    return i;
  };
  start = clamp(start_v, step < 0 ? n - 1 : 0);
  stop = clamp(stop_v, step < 0 ? -1 : n);
}

}  // namespace

Value Interpreter::eval_slice(const Value& object, const SliceExpr& slice, const ScopePtr& scope) {
  Value start_v = slice.start ? eval(*slice.start, scope) : Value(nullptr);
  Value stop_v = slice.stop ? eval(*slice.stop, scope) : Value(nullptr);
  Value step_v = slice.step ? eval(*slice.step, scope) : Value(nullptr);
  if (object.is_undefined()) raise_undefined(object);
  int64_t start, stop, step;
  auto pick = [&](int64_t n, auto&& take) {
    slice_indices(n, start_v, stop_v, step_v, start, stop, step);
    if (step > 0) {
      for (int64_t i = start; i < stop; i += step) take(i);
    } else {
      for (int64_t i = start; i > stop; i += step) take(i);
    }
  };
  if (object.is_string()) {
    const std::string& s = object.as_string();
    std::string out;
    if (py::is_ascii(s)) {
      pick(static_cast<int64_t>(s.size()), [&](int64_t i) { out += s[static_cast<size_t>(i)]; });
    } else {
      std::vector<size_t> offsets = py::code_point_offsets(s);
      pick(static_cast<int64_t>(offsets.size() - 1), [&](int64_t i) {
        size_t k = static_cast<size_t>(i);
        out.append(s, offsets[k], offsets[k + 1] - offsets[k]);
      });
    }
    return new_string(std::move(out));
  }
  if (object.is_list()) {
    const auto& items = object.as_list().items;
    std::vector<Value> out;
    pick(static_cast<int64_t>(items.size()), [&](int64_t i) { out.push_back(items[static_cast<size_t>(i)]); });
    return new_list(std::move(out), object.as_list().kind == SeqKind::Tuple ? SeqKind::Tuple : SeqKind::List);
  }
  // Slicing anything else fails in Python, and jinja2 then returns undefined.
  return Value::undefined(object_name(object) + " has no attribute 'slice'");
}

// ---- object protocol ----

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.kind() == Kind::Callable) return callee.as_callable().function(*this, args);
  if (callee.is_undefined()) raise_undefined(callee);
  type_error(std::string("'") + callee.type_name() + "' object is not callable");
}

Value Interpreter::apply_filter(const std::string& name, const Value& input, CallArgs& args) {
  FilterFunction f = find_filter(name);
  if (!f) throw TemplateError("TemplateAssertionError", "No filter named '" + name + "'.");
  return f(*this, input, args);
}

bool Interpreter::apply_test(const std::string& name, const Value& input, CallArgs& args) {
  TestFunction t = find_test(name);
  if (!t) throw TemplateError("TemplateAssertionError", "No test named '" + name + "'.");
  return t(*this, input, args);
}

Value Interpreter::getattr(const Value& object, const std::string& name) {
  if (object.is_undefined()) raise_undefined(object);
  if (object.kind() == Kind::Namespace) {
    if (const Value* v = object.as_namespace().attributes.find(std::string_view(name))) return *v;
    return Value::undefined("'Namespace' object has no attribute '" + name + "'");
  }
  if (std::optional<Value> method = find_method(*this, object, name)) return *method;
  if (object.is_dict()) {
    if (const Value* v = object.as_dict().find(std::string_view(name))) return *v;
  }
  return Value::undefined(object_name(object) + " has no attribute '" + name + "'");
}

Value Interpreter::getitem(const Value& object, const Value& key) {
  if (object.is_undefined()) raise_undefined(object);
  switch (object.kind()) {
    case Kind::Dict:
      if (const Value* v = object.as_dict().find(key)) return *v;
      break;
    case Kind::List:
    case Kind::String:
      if (key.is_integral()) {
        int64_t i = key.integer();
        if (object.is_list()) {
          const auto& items = object.as_list().items;
          if (object.as_list().kind != SeqKind::List && object.as_list().kind != SeqKind::Tuple)
            break;  // dict views are not subscriptable
          int64_t n = static_cast<int64_t>(items.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
          return Value::undefined(object_name(object) + " has no element " + std::to_string(key.integer()));
        }
        const std::string& s = object.as_string();
        std::vector<size_t> offsets = py::code_point_offsets(s);
        int64_t n = static_cast<int64_t>(offsets.size() - 1);
        if (i < 0) i += n;
        if (i >= 0 && i < n) {
          size_t k = static_cast<size_t>(i);
          return Value(s.substr(offsets[k], offsets[k + 1] - offsets[k]));
        }
        return Value::undefined(object_name(object) + " has no element " + std::to_string(key.integer()));
      }
      break;
    default:
      break;
  }
  // obj[key] failed: jinja2 then tries the attribute of that name.
  if (key.is_string()) {
    if (object.kind() == Kind::Namespace) return getattr(object, key.as_string());
    if (std::optional<Value> method = find_method(*this, object, key.as_string())) return *method;
  }
  return Value::undefined(object_name(object) + " has no element " + to_repr(key));
}

std::vector<Value> Interpreter::iterate(const Value& v) {
  switch (v.kind()) {
    case Kind::Undefined:
      return {};
    case Kind::List:
      return v.as_list().items;
    case Kind::Dict: {
      std::vector<Value> keys;
      for (const auto& [k, _] : v.as_dict().entries) keys.push_back(k);
      return keys;
    }
    case Kind::String: {
      const std::string& s = v.as_string();
      std::vector<Value> chars;
      size_t i = 0;
      while (i < s.size()) {
        size_t start = i;
        py::next_code_point(s, i);
        chars.emplace_back(s.substr(start, i - start));
      }
      charge_bytes(chars.size() * sizeof(Value));
      return chars;
    }
    case Kind::Generator: {
      GeneratorData& g = v.as_generator();
      std::vector<Value> rest(g.items.begin() + static_cast<std::ptrdiff_t>(g.next), g.items.end());
      g.next = g.items.size();
      return rest;
    }
    default:
      type_error(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

}  // namespace kvtier::jinja
