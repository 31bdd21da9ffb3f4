#include "template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "template/error.h"
#include "template/py_string.h"

namespace kvtier::jinja {

namespace {
// Printing, comparing and serializing recurse into containers; namespaces can hold themselves, so the
// recursion is bounded.
constexpr int kMaxNesting = 512;

void check_nesting(int depth) {
  if (depth > kMaxNesting) throw TemplateError("LimitError", "value nested too deeply (or containing itself)");
}
}  // namespace

const Value* DictData::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.as_string()));
  for (const auto& [k, v] : entries)
    if (equals(k, key)) return &v;
  return nullptr;
}

const Value* DictData::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

Value Value::undefined(std::string hint) {
  Value v;
  v.v_ = UndefinedData{std::make_shared<const std::string>(std::move(hint))};
  return v;
}

namespace {
int nesting_of(const std::vector<Value>& items) {
  int deepest = 0;
  for (const Value& item : items) deepest = std::max(deepest, item.nesting());
  if (deepest + 1 > Value::kMaxValueNesting)
    throw TemplateError("LimitError", "value nested too deeply (or containing itself)");
  return deepest + 1;
}
}  // namespace

Value Value::list(std::vector<Value> items, SeqKind kind) {
  Value v;
  int nesting = nesting_of(items);
  v.v_ = std::make_shared<const ListData>(ListData{std::move(items), kind, nesting});
  return v;
}

Value Value::dict(DictData data) {
  int deepest = 0;
  for (const auto& [k, val] : data.entries) deepest = std::max({deepest, k.nesting(), val.nesting()});
  if (deepest + 1 > kMaxValueNesting) throw TemplateError("LimitError", "value nested too deeply (or containing itself)");
  data.nesting = deepest + 1;
  Value v;
  v.v_ = std::make_shared<const DictData>(std::move(data));
  return v;
}

Value Value::generator(std::vector<Value> items) {
  Value v;
  int nesting = nesting_of(items);
  v.v_ = std::make_shared<GeneratorData>(GeneratorData{std::move(items), 0, nesting});
  return v;
}

int Value::nesting() const {
  switch (kind()) {
    case Kind::List: return as_list().nesting;
    case Kind::Dict: return as_dict().nesting;
    case Kind::Generator: return as_generator().nesting;
    case Kind::Callable: return as_callable().nesting;
    default: return 0;
  }
}

Value Value::namespace_object(NamespaceData* data) {
  Value v;
  v.v_ = data;
  return v;
}

Value Value::callable(std::string name, NativeFunction function, bool is_macro, int nesting) {
  if (nesting + 1 > kMaxValueNesting) throw TemplateError("LimitError", "value nested too deeply (or containing itself)");
  Value v;
  v.v_ = std::make_shared<const CallableData>(CallableData{std::move(name), std::move(function), is_macro, nesting + 1});
  return v;
}

const std::string& Value::undefined_hint() const {
  static const std::string kNone = "value is undefined";
  const auto& hint = std::get<UndefinedData>(v_).hint;
  return hint ? *hint : kNone;
}

bool Value::truthy() const {
  switch (kind()) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return as_bool();
    case Kind::Int:
      return as_int() != 0;
    case Kind::Float:
      return as_float() != 0.0;
    case Kind::String:
      return !as_string().empty();
    case Kind::List:
      return !as_list().items.empty();
    case Kind::Dict:
      return !as_dict().entries.empty();
    case Kind::Generator:
    case Kind::Namespace:
    case Kind::Callable:
      return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind()) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List:
      switch (as_list().kind) {
        case SeqKind::List: return "list";
        case SeqKind::Tuple: return "tuple";
        case SeqKind::DictItems: return "dict_items";
        case SeqKind::DictKeys: return "dict_keys";
        case SeqKind::DictValues: return "dict_values";
      }
      return "list";
    case Kind::Dict: return "dict";
    case Kind::Generator: return "generator";
    case Kind::Namespace: return "Namespace";
    case Kind::Callable: return as_callable().is_macro ? "Macro" : "function";
  }
  return "object";
}

namespace {

bool equals_at(const Value& a, const Value& b, int depth) {
  check_nesting(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.number() == b.number();
    return a.integer() == b.integer();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::Undefined:
    case Kind::None:
      return true;
    case Kind::String:
      return a.as_string() == b.as_string();
    case Kind::List: {
      const ListData& x = a.as_list();
      const ListData& y = b.as_list();
      // A list never equals a tuple in Python; dict views compare as their kind does (close enough).
      if ((x.kind == SeqKind::Tuple) != (y.kind == SeqKind::Tuple)) return false;
      if (x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!equals_at(x.items[i], y.items[i], depth + 1)) return false;
      return true;
    }
    case Kind::Dict: {
      const DictData& x = a.as_dict();
      const DictData& y = b.as_dict();
      if (x.entries.size() != y.entries.size()) return false;
      for (const auto& [k, v] : x.entries) {
        const Value* other = y.find(k);
        if (!other || !equals_at(v, *other, depth + 1)) return false;
      }
      return true;
    }
    case Kind::Generator:
      return &a.as_generator() == &b.as_generator();
    case Kind::Namespace:
      return &a.as_namespace() == &b.as_namespace();
    case Kind::Callable:
      return &a.as_callable() == &b.as_callable();
    default:
      return false;
  }
}

bool less_at(const Value& a, const Value& b, int depth) {
  check_nesting(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.number() < b.number();
    return a.integer() < b.integer();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 order = code point order
  if (a.is_list() && b.is_list() && (a.as_list().kind == SeqKind::Tuple) == (b.as_list().kind == SeqKind::Tuple)) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals_at(x[i], y[i], depth + 1)) return less_at(x[i], y[i], depth + 1);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined() || b.is_undefined())
    throw TemplateError("UndefinedError", (a.is_undefined() ? a : b).undefined_hint());
  type_error(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" + b.type_name() +
             "'");
}

void repr_into(std::string& out, const Value& v, bool quote_strings, int depth);

void seq_repr_into(std::string& out, const std::vector<Value>& items, const char* open, const char* close,
                   bool single_tuple, int depth) {
  out += open;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    repr_into(out, items[i], true, depth + 1);
  }
  if (single_tuple && items.size() == 1) out += ',';
  out += close;
}

void dict_repr_into(std::string& out, const DictData& d, int depth) {
  out += '{';
  bool first = true;
  for (const auto& [k, v] : d.entries) {
    if (!first) out += ", ";
    first = false;
    repr_into(out, k, true, depth + 1);
    out += ": ";
    repr_into(out, v, true, depth + 1);
  }
  out += '}';
}

void repr_into(std::string& out, const Value& v, bool quote_strings, int depth) {
  check_nesting(depth);
  switch (v.kind()) {
    case Kind::Undefined:
      if (quote_strings) out += "Undefined";
      return;
    case Kind::None:
      out += "None";
      return;
    case Kind::Bool:
      out += v.as_bool() ? "True" : "False";
      return;
    case Kind::Int:
      out += std::to_string(v.as_int());
      return;
    case Kind::Float:
      out += float_repr(v.as_float());
      return;
    case Kind::String:
      if (quote_strings)
        out += py::repr(v.as_string());
      else
        out += v.as_string();
      return;
    case Kind::List: {
      const ListData& l = v.as_list();
      switch (l.kind) {
        case SeqKind::List: seq_repr_into(out, l.items, "[", "]", false, depth); return;
        case SeqKind::Tuple: seq_repr_into(out, l.items, "(", ")", true, depth); return;
        case SeqKind::DictItems: seq_repr_into(out, l.items, "dict_items([", "])", false, depth); return;
        case SeqKind::DictKeys: seq_repr_into(out, l.items, "dict_keys([", "])", false, depth); return;
        case SeqKind::DictValues: seq_repr_into(out, l.items, "dict_values([", "])", false, depth); return;
      }
      return;
    }
    case Kind::Dict:
      dict_repr_into(out, v.as_dict(), depth);
      return;
    case Kind::Generator:
      out += "<generator object>";
      return;
    case Kind::Namespace:
      out += "<Namespace ";
      dict_repr_into(out, v.as_namespace().attributes, depth);
      out += '>';
      return;
    case Kind::Callable:
      out += v.as_callable().is_macro ? "<Macro '" + v.as_callable().name + "'>"
                                      : "<built-in function " + v.as_callable().name + ">";
      return;
  }
}

void json_string_into(std::string& out, const std::string& s, bool ensure_ascii) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (ensure_ascii && static_cast<uint8_t>(c) >= 0x80) {
      size_t next = i;
      uint32_t cp = py::next_code_point(s, next);
      i = next - 1;
      auto unit = [&](uint32_t u) {
        out += "\\u";
        for (int shift = 12; shift >= 0; shift -= 4) out += hex[(u >> shift) & 15];
      };
      if (cp >= 0x10000) {
        cp -= 0x10000;
        unit(0xD800 + (cp >> 10));
        unit(0xDC00 + (cp & 0x3FF));
      } else {
        unit(cp);
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<uint8_t>(c) < 0x20) {
          out += "\\u00";
          out += hex[(c >> 4) & 15];
          out += hex[c & 15];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return float_repr(d);
}

struct JsonWriter {
  const JsonDumpOptions& options;
  std::string out;

  void newline(int level) {
    if (options.max_bytes && out.size() + static_cast<size_t>(level) * options.indent->size() > options.max_bytes)
      throw TemplateError("LimitError", "tojson output longer than " + std::to_string(options.max_bytes) + " bytes");
    out += '\n';
    for (int i = 0; i < level; ++i) out += *options.indent;
  }

  std::string key_text(const Value& k) {
    switch (k.kind()) {
      case Kind::String: return k.as_string();
      case Kind::Int: return std::to_string(k.as_int());
      case Kind::Bool: return k.as_bool() ? "true" : "false";
      case Kind::Float: return json_float(k.as_float());
      case Kind::None: return "null";
      default: type_error(std::string("keys must be str, int, float, bool or None, not ") + k.type_name());
    }
  }

  void write(const Value& v, int level) {
    check_nesting(level);
    if (options.max_bytes && out.size() > options.max_bytes)
      throw TemplateError("LimitError", "tojson output longer than " + std::to_string(options.max_bytes) + " bytes");
    switch (v.kind()) {
      case Kind::None: out += "null"; return;
      case Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
      case Kind::Int: out += std::to_string(v.as_int()); return;
      case Kind::Float: out += json_float(v.as_float()); return;
      case Kind::String: json_string_into(out, v.as_string(), options.ensure_ascii); return;
      case Kind::List: {
        const ListData& l = v.as_list();
        if (l.kind != SeqKind::List && l.kind != SeqKind::Tuple) break;
        if (l.items.empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (size_t i = 0; i < l.items.size(); ++i) {
          if (i) out += options.item_separator;
          if (options.indent) newline(level + 1);
          write(l.items[i], level + 1);
        }
        if (options.indent) newline(level);
        out += ']';
        return;
      }
      case Kind::Dict: {
        const DictData& d = v.as_dict();
        if (d.entries.empty()) {
          out += "{}";
          return;
        }
        std::vector<const std::pair<Value, Value>*> entries;
        for (const auto& e : d.entries) entries.push_back(&e);
        if (options.sort_keys)
          std::stable_sort(entries.begin(), entries.end(),
                           [](const auto* x, const auto* y) { return less_than(x->first, y->first); });
        out += '{';
        bool first = true;
        for (const auto* e : entries) {
          if (!first) out += options.item_separator;
          first = false;
          if (options.indent) newline(level + 1);
          json_string_into(out, key_text(e->first), options.ensure_ascii);
          out += options.key_separator;
          write(e->second, level + 1);
        }
        if (options.indent) newline(level);
        out += '}';
        return;
      }
      default:
        break;
    }
    type_error(std::string("Object of type ") + v.type_name() + " is not JSON serializable");
  }
};

}  // namespace

bool equals(const Value& a, const Value& b) { return equals_at(a, b, 0); }
bool less_than(const Value& a, const Value& b) { return less_at(a, b, 0); }

std::string to_str(const Value& v) {
  if (v.is_string()) return v.as_string();
  std::string out;
  repr_into(out, v, false, 0);
  return out;
}

std::string to_repr(const Value& v) {
  std::string out;
  repr_into(out, v, true, 0);
  return out;
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits in scientific form ("d.ddde+XX"), then laid out as Python's repr does:
  // positional for exponents in [-4, 16), scientific otherwise.
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, end);
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  int exponent = std::atoi(sci.c_str() + e + 1);
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      out += digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) {
    out += '.';
    out.append(digits, 1);
  }
  char exp_text[16];
  std::snprintf(exp_text, sizeof(exp_text), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_text;
}

std::string to_json(const Value& v, const JsonDumpOptions& options) {
  JsonWriter writer{options, {}};
  writer.write(v, 0);
  if (options.max_bytes && writer.out.size() > options.max_bytes)
    throw TemplateError("LimitError", "tojson output longer than " + std::to_string(options.max_bytes) + " bytes");
  return std::move(writer.out);
}

}  // namespace kvtier::jinja
