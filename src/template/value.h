// The template language's values: Python's objects as jinja2 sees them, reduced to what templates use.
// Lists and dicts are immutable once built (the sandbox refuses mutation methods), so they are shared
// by pointer; the one mutable object, namespace(), lives in the interpreter's arena for the render.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kvtier::jinja {

class Value;
class Interpreter;
struct CallArgs;

enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Generator, Namespace, Callable };

// What a list-like value is in Python: it decides repr(), ==, and whether tojson accepts it.
enum class SeqKind : uint8_t { List, Tuple, DictItems, DictKeys, DictValues };

struct ListData {
  std::vector<Value> items;
  SeqKind kind = SeqKind::List;
  int nesting = 0;  // containers inside containers, counted (see Value::nesting)
};

// A dict keeps insertion order, like Python's. Lookups are linear: template dicts are small.
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  int nesting = 0;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
};

// The result of map/select/selectattr/...: a one-pass iterator, as jinja2's generators are
// (true when tested, no length, not JSON-serializable).
struct GeneratorData {
  std::vector<Value> items;
  size_t next = 0;
  int nesting = 0;
};

struct NamespaceData {
  DictData attributes;
};

using NativeFunction = std::function<Value(Interpreter&, CallArgs&)>;
struct CallableData {
  std::string name;
  NativeFunction function;
  bool is_macro = false;
  int nesting = 0;  // a bound method holds its object
};

struct UndefinedData {
  // Why it is undefined ("'x' is undefined"), reported when the template uses it in a way that needs a value.
  std::shared_ptr<const std::string> hint;
};

class Value {
 public:
  Value() = default;  // undefined
  Value(std::nullptr_t) : v_(nullptr) {}  // NOLINT: Python's None
  Value(bool b) : v_(b) {}  // NOLINT
  Value(int64_t i) : v_(i) {}  // NOLINT
  Value(int i) : v_(int64_t{i}) {}  // NOLINT
  Value(double d) : v_(d) {}  // NOLINT
  Value(std::string s) : v_(std::make_shared<const std::string>(std::move(s))) {}  // NOLINT
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  Value(std::string_view s) : Value(std::string(s)) {}  // NOLINT

  static Value undefined(std::string hint);
  // A string marked safe (jinja2's Markup, from `|safe` or `|escape`): what is added to it gets escaped.
  static Value markup(std::string s) {
    Value v(std::move(s));
    v.markup_ = true;
    return v;
  }
  bool is_markup() const { return markup_ && is_string(); }
  static Value list(std::vector<Value> items, SeqKind kind = SeqKind::List);
  static Value dict(DictData data);
  static Value generator(std::vector<Value> items);
  static Value namespace_object(NamespaceData* data);
  // nesting: that of a value the function holds (a bound method's object).
  static Value callable(std::string name, NativeFunction function, bool is_macro = false, int nesting = 0);

  // How deeply containers nest inside this value (0 for scalars). The factories refuse values nested
  // deeper than kMaxValueNesting, so that printing, comparing and destroying a value cannot recurse
  // without bound.
  int nesting() const;
  static constexpr int kMaxValueNesting = 512;

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::Undefined; }
  bool is_none() const { return kind() == Kind::None; }
  bool is_bool() const { return kind() == Kind::Bool; }
  bool is_int() const { return kind() == Kind::Int; }
  bool is_float() const { return kind() == Kind::Float; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // bool is an int in Python
  bool is_string() const { return kind() == Kind::String; }
  bool is_list() const { return kind() == Kind::List; }
  bool is_dict() const { return kind() == Kind::Dict; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_float() const { return std::get<double>(v_); }
  const std::string& as_string() const { return *std::get<std::shared_ptr<const std::string>>(v_); }
  const ListData& as_list() const { return *std::get<std::shared_ptr<const ListData>>(v_); }
  const DictData& as_dict() const { return *std::get<std::shared_ptr<const DictData>>(v_); }
  GeneratorData& as_generator() const { return *std::get<std::shared_ptr<GeneratorData>>(v_); }
  NamespaceData& as_namespace() const { return *std::get<NamespaceData*>(v_); }
  const CallableData& as_callable() const { return *std::get<std::shared_ptr<const CallableData>>(v_); }
  const std::string& undefined_hint() const;

  // Integer value of an int or a bool (Python's bool is an int); a float as double for any number.
  int64_t integer() const { return is_bool() ? int64_t{as_bool()} : as_int(); }
  double number() const { return is_float() ? as_float() : static_cast<double>(integer()); }
  bool is_integral() const { return is_int() || is_bool(); }

  // Python truthiness.
  bool truthy() const;
  // Python's name for the type, for error messages ("dict", "str", "NoneType", ...).
  const char* type_name() const;

 private:
  std::variant<UndefinedData, std::nullptr_t, bool, int64_t, double, std::shared_ptr<const std::string>,
               std::shared_ptr<const ListData>, std::shared_ptr<const DictData>, std::shared_ptr<GeneratorData>,
               NamespaceData*, std::shared_ptr<const CallableData>>
      v_;
  bool markup_ = false;
};

// Python's == (numbers by value, 1 == 1.0 == True; tuples never equal lists; dicts regardless of order).
bool equals(const Value& a, const Value& b);
// Python's < for numbers, strings and same-kind sequences; throws TemplateError for other pairs.
bool less_than(const Value& a, const Value& b);

// str(x) as jinja2 prints it: undefined -> "", None -> "None", True -> "True", containers as repr.
std::string to_str(const Value& v);
// repr(x): strings quoted as Python quotes them.
std::string to_repr(const Value& v);
// jinja2's escape(): & < > " ' as HTML entities.
std::string html_escape(std::string_view s);
// Python's repr of a float: shortest round-trip digits, "1.0", "1e+16", "inf".
std::string float_repr(double d);

struct JsonDumpOptions {
  std::optional<std::string> indent;  // nullopt: one line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;  // true: non-ASCII text as \uXXXX escapes
  size_t max_bytes = 0;       // non-zero: throw LimitError past this many bytes of output
};
// json.dumps(v, ensure_ascii=False, ...): exactly Python's output. Throws TemplateError for values
// that are not JSON-serializable (undefined, generators, callables, namespaces, dict views).
std::string to_json(const Value& v, const JsonDumpOptions& options);

}  // namespace kvtier::jinja
