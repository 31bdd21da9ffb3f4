// jinja2's filters and tests (the ones chat templates use, and their neighbours), and Python's arithmetic.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <unordered_map>

#include "template/interpreter.h"
#include "template/py_string.h"

namespace kvtier::jinja {

namespace {

[[noreturn]] void overflow() { throw TemplateError("OverflowError", "integer result too large"); }

// soft_str: what jinja2's string filters apply to their input (undefined -> "").
std::string soft_str(const Value& v) { return to_str(v); }

// Python's ints do not overflow; ours are 64-bit, and past that the template gets an error.
int64_t add_checked(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) overflow();
  return r;
}
int64_t sub_checked(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) overflow();
  return r;
}
int64_t mul_checked(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) overflow();
  return r;
}

int64_t floor_div(int64_t a, int64_t b) {
  if (b == -1 && a == std::numeric_limits<int64_t>::min()) overflow();
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t py_mod(int64_t a, int64_t b) {
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

Value repeat(Interpreter& in, const Value& seq, int64_t times) {
  if (times <= 0) return seq.is_string() ? Value(std::string()) : in.new_list({}, seq.as_list().kind);
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    if (!s.empty() && static_cast<uint64_t>(times) > std::numeric_limits<size_t>::max() / s.size()) overflow();
    in.check_length(s.size() * static_cast<size_t>(times));
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += s;
    return in.new_string(std::move(out));
  }
  const auto& items = seq.as_list().items;
  if (!items.empty() && static_cast<uint64_t>(times) > std::numeric_limits<size_t>::max() / (items.size() * sizeof(Value))) overflow();
  in.charge_bytes(items.size() * static_cast<size_t>(times) * sizeof(Value));  // before allocating it
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::list(std::move(out), seq.as_list().kind);
}

bool is_plain_sequence(const Value& v) {
  return v.is_list() && (v.as_list().kind == SeqKind::List || v.as_list().kind == SeqKind::Tuple);
}

// Python's printf-style formatting ("%s and %d" % args), as jinja2's `format` filter and `%` use it.
std::string percent_format(const std::string& format, const Value& args) {
  std::vector<Value> positional;
  const DictData* named = args.is_dict() ? &args.as_dict() : nullptr;
  if (is_plain_sequence(args) && args.as_list().kind == SeqKind::Tuple) {
    positional = args.as_list().items;
  } else if (!named) {
    positional.push_back(args);
  }
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    char c = format[i];
    if (c != '%') {
      out += c;
      continue;
    }
    if (++i >= format.size()) value_error("incomplete format");
    const Value* arg = nullptr;
    if (format[i] == '(') {
      size_t close = format.find(')', i);
      if (close == std::string::npos || !named) value_error("incomplete format key");
      arg = named->find(std::string_view(format).substr(i + 1, close - i - 1));
      if (!arg) throw TemplateError("KeyError", format.substr(i + 1, close - i - 1));
      i = close + 1;
    }
    std::string spec;
    // Python's order: flags, width, then .precision.
    while (i < format.size() && std::string_view("-+ #0").find(format[i]) != std::string_view::npos) spec += format[i++];
    while (i < format.size() && format[i] >= '0' && format[i] <= '9') spec += format[i++];
    if (i < format.size() && format[i] == '.') {
      spec += format[i++];
      while (i < format.size() && format[i] >= '0' && format[i] <= '9') spec += format[i++];
    }
    if (i >= format.size()) value_error("incomplete format");
    char conv = format[i];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (!arg) {
      if (next >= positional.size()) type_error("not enough arguments for format string");
      arg = &positional[next++];
    }
    char buf[1024];
    std::string fmt = "%" + spec;
    for (size_t k = 0; k < spec.size();) {  // widths and precisions stay small, so buf holds the result
      size_t digits_end = spec.find_first_not_of("0123456789", k);
      if (digits_end == std::string::npos) digits_end = spec.size();
      if (digits_end - k > 3) value_error("format width or precision too large");
      k = digits_end == k ? k + 1 : digits_end;
    }
    if (conv == 's' || conv == 'r' || conv == 'a') {
      // Width and precision count code points, so they are applied here rather than by snprintf.
      std::string text = conv == 's' ? to_str(*arg) : to_repr(*arg);
      size_t dot = spec.find('.');
      std::string width_part = spec.substr(0, dot);
      if (dot != std::string::npos) {
        size_t precision = static_cast<size_t>(std::atoi(spec.c_str() + dot + 1));
        std::vector<size_t> offsets = py::code_point_offsets(text);
        if (precision < offsets.size() - 1) text.resize(offsets[precision]);
      }
      size_t digits = width_part.find_first_of("123456789");
      size_t width = digits == std::string::npos ? 0 : static_cast<size_t>(std::atoi(width_part.c_str() + digits));
      size_t len = py::length(text);
      if (width > 4096) value_error("format width too large");
      if (width > len) {
        std::string pad(width - len, ' ');
        text = width_part.find('-') != std::string::npos ? text + pad : pad + text;
      }
      out += text;
    } else if (std::string_view("dixXo").find(conv) != std::string_view::npos) {
      if (!arg->is_number()) type_error(std::string("%") + conv + " format: a real number is required, not " + arg->type_name());
      if (arg->is_float() && conv != 'd' && conv != 'i')
        type_error(std::string("%") + conv + " format: an integer is required, not float");
      long long v = arg->is_float() ? static_cast<long long>(arg->as_float()) : arg->integer();
      std::snprintf(buf, sizeof(buf), (fmt + "ll" + (conv == 'i' ? 'd' : conv)).c_str(), v);
      out += buf;
    } else if (std::string_view("eEfFgG").find(conv) != std::string_view::npos) {
      if (!arg->is_number()) type_error(std::string("must be real number, not ") + arg->type_name());
      std::snprintf(buf, sizeof(buf), (fmt + conv).c_str(), arg->number());
      out += buf;
    } else {
      value_error(std::string("unsupported format character '") + conv + "'");
    }
  }
  return out;
}

// Attribute path "a.b.0" as jinja2's make_attrgetter walks it.
Value walk_attribute(Interpreter& in, Value v, const Value& attribute) {
  if (!attribute.is_string()) return in.getitem(v, attribute);
  const std::string& path = attribute.as_string();
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    v = numeric ? in.getitem(v, Value(static_cast<int64_t>(std::strtoll(part.c_str(), nullptr, 10)))) : in.getitem(v, Value(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

Value lowered(const Value& v, bool case_sensitive) {
  return !case_sensitive && v.is_string() ? Value(py::lower(v.as_string())) : v;
}

// ---- filters ----

Value f_abs(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "abs", {});
  if (v.is_float()) return Value(std::fabs(v.as_float()));
  if (v.is_integral()) {
    if (v.integer() == std::numeric_limits<int64_t>::min()) overflow();
    return Value(v.integer() < 0 ? -v.integer() : v.integer());
  }
  if (v.is_undefined()) raise_undefined(v);
  type_error(std::string("bad operand type for abs(): '") + v.type_name() + "'");
}

Value f_attr(Interpreter& in, const Value& v, CallArgs& args) {
  // Python attributes only (methods, namespace attributes), never dict items.
  auto a = bind_args(args, "attr", {"name"}, 1);
  std::string name = to_str(a[0]);
  if (v.kind() == Kind::Namespace) return in.getattr(v, name);
  if (v.is_undefined()) raise_undefined(v);
  if (std::optional<Value> method = find_method(in, v, name)) return *method;
  return Value::undefined(std::string("'") + v.type_name() + " object' has no attribute '" + name + "'");
}

Value f_batch(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "batch", {"linecount", "fill_with"}, 1);
  if (!a[0].is_integral() || a[0].integer() <= 0) value_error("batch size must be a positive integer");
  size_t size = static_cast<size_t>(a[0].integer());
  std::vector<Value> batches, current;
  for (Value& item : in.iterate(v)) {
    current.push_back(std::move(item));
    if (current.size() == size) batches.push_back(in.new_list(std::move(current))), current.clear();
  }
  if (!current.empty()) {
    if (!a[1].is_undefined() && !a[1].is_none())
      while (current.size() < size) current.push_back(a[1]);
    batches.push_back(in.new_list(std::move(current)));
  }
  return Value::generator(std::move(batches));
}

Value f_capitalize(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "capitalize", {});
  return in.new_string(py::capitalize(soft_str(v)));
}

Value f_center(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "center", {"width"});
  std::string s = soft_str(v);
  int64_t width = a[0].is_undefined() ? 80 : a[0].integer();
  int64_t len = static_cast<int64_t>(py::length(s));
  if (width <= len) return Value(s);
  in.check_length(static_cast<size_t>(width));
  int64_t total = width - len;
  int64_t left = total / 2 + (total & width & 1);  // Python's str.center puts the odd space on the left when width is odd
  return in.new_string(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(total - left), ' '));
}

Value f_default(Interpreter&, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "default", {"default_value", "boolean"});
  Value fallback = args.positional.empty() && std::none_of(args.keyword.begin(), args.keyword.end(),
                                                           [](auto& k) { return k.first == "default_value"; })
                       ? Value(std::string())
                       : a[0];
  if (v.is_undefined() || (a[1].truthy() && !v.truthy())) return fallback;
  return v;
}

Value f_dictsort(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "dictsort", {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) type_error("You can only sort by either \"key\" or \"value\"");
  bool case_sensitive = a[0].truthy();
  size_t pos = 0;
  if (!a[1].is_undefined()) {
    std::string by = to_str(a[1]);
    if (by == "value") pos = 1;
    else if (by != "key") throw TemplateError("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
  }
  std::vector<std::pair<Value, Value>> entries = v.as_dict().entries;
  std::stable_sort(entries.begin(), entries.end(), [&](const auto& x, const auto& y) {
    const Value& l = pos ? x.second : x.first;
    const Value& r = pos ? y.second : y.first;
    return less_than(lowered(l, case_sensitive), lowered(r, case_sensitive));
  });
  if (a[2].truthy()) std::reverse(entries.begin(), entries.end());
  std::vector<Value> out;
  for (auto& [k, val] : entries) out.push_back(in.new_list({k, val}, SeqKind::Tuple));
  return in.new_list(std::move(out));
}

Value f_escape(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "escape", {});
  if (v.is_markup()) return v;
  std::string escaped = html_escape(to_str(v));
  in.check_length(escaped.size());
  in.charge_bytes(escaped.size());
  return Value::markup(std::move(escaped));
}

Value f_first(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "first", {});
  if (v.kind() == Kind::Generator) {
    GeneratorData& g = v.as_generator();
    if (g.next < g.items.size()) return g.items[g.next++];
    return Value::undefined("No first item, sequence was empty.");
  }
  std::vector<Value> items = in.iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "last", {});
  if (v.kind() == Kind::Generator) type_error("'generator' object is not reversible");
  std::vector<Value> items = in.iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

// Python's float() of a string: decimal or inf/nan, surrounding whitespace allowed.
bool parse_python_float(const std::string& text, double& out) {
  std::string s = py::strip(text, nullptr, true, true);
  std::string lower = py::lower(s);
  if (lower == "inf" || lower == "+inf" || lower == "infinity" || lower == "+infinity") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (lower == "-inf" || lower == "-infinity") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (lower == "nan" || lower == "+nan" || lower == "-nan") {
    out = std::nan("");
    return true;
  }
  if (s.empty() || lower.find_first_not_of("0123456789.e+-_") != std::string::npos) return false;
  std::string digits;
  for (char c : s)
    if (c != '_') digits += c;
  char* end = nullptr;
  out = std::strtod(digits.c_str(), &end);
  return end == digits.c_str() + digits.size();
}

Value f_float(Interpreter&, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "float", {"default"});
  Value fallback = a[0].is_undefined() ? Value(0.0) : a[0];
  if (v.is_number()) return Value(v.number());
  double d = 0;
  if (v.is_string() && parse_python_float(v.as_string(), d)) return Value(d);
  return fallback;
}

Value f_format(Interpreter& in, const Value& v, CallArgs& args) {
  Value format_args;
  if (!args.keyword.empty()) {
    DictData d;
    for (auto& [k, val] : args.keyword) d.entries.emplace_back(Value(k), val);
    format_args = Value::dict(std::move(d));
  } else {
    format_args = Value::list(args.positional, SeqKind::Tuple);
  }
  return in.new_string(percent_format(soft_str(v), format_args));
}

Value f_indent(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "indent", {"width", "first", "blank"});
  std::string indentation;
  if (a[0].is_string()) {
    indentation = a[0].as_string();
  } else {
    int64_t width = a[0].is_undefined() ? 4 : a[0].integer();
    if (width > 0) {
      in.check_length(static_cast<size_t>(width));
      indentation.assign(static_cast<size_t>(width), ' ');
    }
  }
  std::string s = soft_str(v) + "\n";
  std::vector<std::string> lines = py::splitlines(s, false);
  std::string out;
  if (a[2].truthy()) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) out += "\n" + indentation;
      out += lines[i];
    }
  } else {
    out = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      out += "\n";
      if (!lines[i].empty()) out += indentation;
      out += lines[i];
    }
  }
  if (a[1].truthy()) out = indentation + out;
  return in.new_string(std::move(out));
}

// Python's int() of a string in base 10: optional sign, digits with single underscores, surrounding spaces.
bool parse_python_int(const std::string& text, int64_t& out) {
  std::string s = py::strip(text, nullptr, true, true);
  size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  if (i >= s.size()) return false;
  __int128 value = 0;
  bool last_digit = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '_' && last_digit && i + 1 < s.size() && s[i + 1] != '_') {
      last_digit = false;
      continue;
    }
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
    if (value > static_cast<__int128>(std::numeric_limits<int64_t>::max()) + 1) return false;
    last_digit = true;
  }
  if (!last_digit) return false;
  value = negative ? -value : value;
  if (value > std::numeric_limits<int64_t>::max()) return false;
  out = static_cast<int64_t>(value);
  return true;
}

Value f_int(Interpreter&, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "int", {"default", "base"});
  Value fallback = a[0].is_undefined() ? Value(0) : a[0];
  if (v.is_integral()) return Value(v.integer());
  if (v.is_float()) {
    double d = v.as_float();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return fallback;
    return Value(static_cast<int64_t>(d));
  }
  if (v.is_string()) {
    int64_t base = a[1].is_undefined() ? 10 : a[1].integer();
    int64_t parsed = 0;
    if (base == 10 && parse_python_int(v.as_string(), parsed)) return Value(parsed);
    if (base != 10) {
      std::string s = py::strip(v.as_string(), nullptr, true, true);
      char* end = nullptr;
      errno = 0;
      long long r = std::strtoll(s.c_str(), &end, static_cast<int>(base));
      if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value(static_cast<int64_t>(r));
    }
    double d = 0;
    if (parse_python_float(v.as_string(), d) && std::isfinite(d) && std::fabs(d) < 9.2e18)
      return Value(static_cast<int64_t>(d));
  }
  return fallback;
}

Value f_items(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "items", {});
  if (v.is_undefined()) return Value::generator({});
  if (!v.is_dict()) type_error("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.as_dict().entries) out.push_back(in.new_list({k, val}, SeqKind::Tuple));
  return Value::generator(std::move(out));
}

Value f_join(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "join", {"d", "attribute"});
  std::string separator = a[0].is_undefined() ? "" : to_str(a[0]);
  std::string out;
  bool first = true;
  for (const Value& item : in.iterate(v)) {
    if (!first) out += separator;
    first = false;
    out += to_str(a[1].is_undefined() ? item : walk_attribute(in, item, a[1]));
    in.check_length(out.size());
  }
  return in.new_string(std::move(out));
}

Value f_length(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "length", {});
  switch (v.kind()) {
    case Kind::Undefined: return Value(0);
    case Kind::String: return Value(static_cast<int64_t>(py::length(v.as_string())));
    case Kind::List: return Value(static_cast<int64_t>(v.as_list().items.size()));
    case Kind::Dict: return Value(static_cast<int64_t>(v.as_dict().entries.size()));
    default: type_error(std::string("object of type '") + v.type_name() + "' has no len()");
  }
}

Value f_list(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "list", {});
  return in.new_list(in.iterate(v));
}

Value f_lower(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "lower", {});
  return in.new_string(py::lower(soft_str(v)));
}

Value f_upper(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "upper", {});
  return in.new_string(py::upper(soft_str(v)));
}

Value f_title(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "title", {});
  // jinja2's title: each run after one of -, whitespace, (, {, [, < starts a word.
  std::string s = soft_str(v);
  std::string out;
  bool word_start = true;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    uint32_t cp = py::next_code_point(s, i);
    bool separator = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || py::is_space(cp);
    std::string_view ch(s.data() + start, i - start);
    if (separator) {
      out += ch;
      word_start = true;
    } else {
      out += word_start ? py::upper(ch) : py::lower(ch);
      word_start = false;
    }
  }
  return in.new_string(std::move(out));
}

Value select_by_test(Interpreter& in, const Value& v, CallArgs& args, bool by_attribute, bool keep_matching,
                     const char* name) {
  if ((by_attribute && args.positional.empty()) || !args.keyword.empty())
    type_error(std::string(name) + "() needs its arguments by position");
  size_t next = 0;
  Value attribute = by_attribute ? args.positional[next++] : Value();
  std::string test_name;
  CallArgs test_args;
  if (next < args.positional.size()) {
    test_name = to_str(args.positional[next++]);
    test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(next), args.positional.end());
  }
  std::vector<Value> out;
  if (!v.truthy()) return Value::generator({});  // jinja2 iterates only a truthy input
  for (Value& item : in.iterate(v)) {
    Value subject = by_attribute ? walk_attribute(in, item, attribute) : item;
    bool passed = test_name.empty() ? subject.truthy() : in.apply_test(test_name, subject, test_args);
    if (passed == keep_matching) out.push_back(std::move(item));
  }
  return Value::generator(std::move(out));
}

Value f_select(Interpreter& in, const Value& v, CallArgs& args) { return select_by_test(in, v, args, false, true, "select"); }
Value f_reject(Interpreter& in, const Value& v, CallArgs& args) { return select_by_test(in, v, args, false, false, "reject"); }
Value f_selectattr(Interpreter& in, const Value& v, CallArgs& args) { return select_by_test(in, v, args, true, true, "selectattr"); }
Value f_rejectattr(Interpreter& in, const Value& v, CallArgs& args) { return select_by_test(in, v, args, true, false, "rejectattr"); }

Value f_map(Interpreter& in, const Value& v, CallArgs& args) {
  std::vector<Value> out;
  if (!v.truthy()) return Value::generator({});  // jinja2 iterates only a truthy input
  const Value* attribute = nullptr;
  Value fallback;
  for (auto& [k, val] : args.keyword) {
    if (k == "attribute") attribute = &val;
    else if (k == "default") fallback = val;
  }
  if (attribute) {
    for (const Value& item : in.iterate(v)) {
      Value r = walk_attribute(in, item, *attribute);
      out.push_back(r.is_undefined() && !fallback.is_undefined() ? fallback : r);
    }
    return Value::generator(std::move(out));
  }
  if (args.positional.empty()) type_error("map requires a filter argument");
  std::string filter = to_str(args.positional[0]);
  CallArgs filter_args;
  filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
  filter_args.keyword = args.keyword;
  for (const Value& item : in.iterate(v)) {
    CallArgs a = filter_args;
    out.push_back(in.apply_filter(filter, item, a));
  }
  return Value::generator(std::move(out));
}

Value min_max(Interpreter& in, const Value& v, CallArgs& args, bool want_max) {
  auto a = bind_args(args, want_max ? "max" : "min", {"case_sensitive", "attribute"});
  std::vector<Value> items = in.iterate(v);
  if (items.empty()) return Value::undefined(std::string("No aggregated item, sequence was empty."));
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    Value x = lowered(a[1].is_undefined() ? items[i] : walk_attribute(in, items[i], a[1]), a[0].truthy());
    Value y = lowered(a[1].is_undefined() ? items[best] : walk_attribute(in, items[best], a[1]), a[0].truthy());
    if (want_max ? less_than(y, x) : less_than(x, y)) best = i;
  }
  return items[best];
}
Value f_max(Interpreter& in, const Value& v, CallArgs& args) { return min_max(in, v, args, true); }
Value f_min(Interpreter& in, const Value& v, CallArgs& args) { return min_max(in, v, args, false); }

Value f_replace(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "replace", {"old", "new", "count"}, 2);
  int64_t count = a[2].is_undefined() || a[2].is_none() ? -1 : a[2].integer();
  std::string s = soft_str(v);
  std::string old = to_str(a[0]), replacement = to_str(a[1]);
  size_t occurrences = old.empty() ? py::length(s) + 1 : py::count(s, old);
  if (replacement.size() > old.size()) in.check_length(s.size() + occurrences * (replacement.size() - old.size()));
  return in.new_string(py::replace(s, old, replacement, count));
}

Value f_reverse(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "reverse", {});
  if (v.is_string()) {
    const std::string& s = v.as_string();
    std::vector<size_t> offsets = py::code_point_offsets(s);
    std::string out;
    for (size_t k = offsets.size() - 1; k > 0; --k) out.append(s, offsets[k - 1], offsets[k] - offsets[k - 1]);
    return in.new_string(std::move(out));
  }
  if (v.is_undefined()) raise_undefined(v);
  std::vector<Value> items = in.iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::generator(std::move(items));
}

Value f_round(Interpreter&, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "round", {"precision", "method"});
  int64_t precision = a[0].is_undefined() ? 0 : a[0].integer();
  std::string method = a[1].is_undefined() ? "common" : to_str(a[1]);
  if (method != "common" && method != "ceil" && method != "floor")
    throw TemplateError("FilterArgumentError", "method must be common, ceil or floor");
  if (!v.is_number()) type_error(std::string("type ") + v.type_name() + " doesn't define __round__ method");
  if (method == "common" && v.is_integral() && precision >= 0) return Value(v.integer());
  double d = v.number();
  if (precision > 300 || precision < -300) return Value(d);
  if (method == "common") {
    // Python rounds the exact binary value half-to-even; printf does the same.
    char buf[1024];
    if (precision >= 0) {
      std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(precision), d);
      return Value(std::strtod(buf, nullptr));
    }
    double scale = std::pow(10.0, static_cast<double>(-precision));
    return Value(std::nearbyint(d / scale) * scale);
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  return Value((method == "ceil" ? std::ceil(d * scale) : std::floor(d * scale)) / scale);
}

Value f_safe(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "safe", {});
  return Value::markup(to_str(v));
}

Value f_sort(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "sort", {"reverse", "case_sensitive", "attribute"});
  std::vector<Value> items = in.iterate(v);
  bool case_sensitive = a[1].truthy();
  auto key = [&](const Value& item) {
    return lowered(a[2].is_undefined() ? item : walk_attribute(in, item, a[2]), case_sensitive);
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) { return less_than(key(x), key(y)); });
  if (a[0].truthy()) {
    // Python's reverse sort keeps equal items in their original order.
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) { return less_than(key(y), key(x)); });
  }
  return in.new_list(std::move(items));
}

Value f_string(Interpreter& in, const Value& v, CallArgs& args) {
  bind_args(args, "string", {});
  return v.is_string() ? v : in.new_string(to_str(v));  // a Markup stays Markup, as soft_str keeps it
}

Value f_sum(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "sum", {"attribute", "start"});
  Value total = a[1].is_undefined() ? Value(0) : a[1];
  for (const Value& item : in.iterate(v))
    total = binary_arithmetic(in, BinaryOp::Add, total, a[0].is_undefined() ? item : walk_attribute(in, item, a[0]));
  return total;
}

Value f_tojson(Interpreter& in, const Value& v, CallArgs& args) {
  // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  auto a = bind_args(args, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions options;
  options.ensure_ascii = a[0].truthy();
  if (!a[1].is_undefined() && !a[1].is_none()) {
    if (a[1].is_string()) {
      options.indent = a[1].as_string();
    } else if (a[1].is_integral()) {
      int64_t n = a[1].integer();
      in.check_length(n > 0 ? static_cast<size_t>(n) : 0);
      options.indent = std::string(n > 0 ? static_cast<size_t>(n) : 0, ' ');
    } else {
      type_error("indent must be an int or a string");
    }
    options.item_separator = ",";
  }
  if (!a[2].is_undefined() && !a[2].is_none()) {
    std::vector<Value> seps = in.iterate(a[2]);
    if (seps.size() != 2 || !seps[0].is_string() || !seps[1].is_string())
      value_error("separators must be a pair of strings");
    options.item_separator = seps[0].as_string();
    options.key_separator = seps[1].as_string();
  }
  options.sort_keys = a[3].truthy();
  options.max_bytes = in.max_string_bytes();
  std::string json = to_json(v, options);
  return in.new_string(std::move(json));
}

Value f_trim(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "trim", {"chars"});
  std::string chars = a[0].is_undefined() || a[0].is_none() ? std::string() : to_str(a[0]);
  return in.new_string(py::strip(soft_str(v), a[0].is_undefined() || a[0].is_none() ? nullptr : &chars, true, true));
}

Value f_truncate(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "truncate", {"length", "killwords", "end", "leeway"});
  std::string s = soft_str(v);
  int64_t length = a[0].is_undefined() ? 255 : a[0].integer();
  std::string end = a[2].is_undefined() ? "..." : to_str(a[2]);
  int64_t leeway = a[3].is_undefined() ? 5 : a[3].integer();
  std::vector<size_t> offsets = py::code_point_offsets(s);
  int64_t n = static_cast<int64_t>(offsets.size() - 1);
  int64_t end_len = static_cast<int64_t>(py::length(end));
  if (length < end_len) value_error("expected length >= " + std::to_string(end_len));
  if (n <= length + leeway) return v.is_string() ? v : Value(s);
  std::string head = s.substr(0, offsets[static_cast<size_t>(length - end_len)]);
  if (a[1].truthy()) return in.new_string(head + end);
  size_t space = head.rfind(' ');
  if (space != std::string::npos) head.resize(space);
  return in.new_string(head + end);
}

Value f_unique(Interpreter& in, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "unique", {"case_sensitive", "attribute"});
  std::vector<Value> seen, out;
  for (Value& item : in.iterate(v)) {
    Value key = lowered(a[1].is_undefined() ? item : walk_attribute(in, item, a[1]), a[0].truthy());
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
      seen.push_back(std::move(key));
      out.push_back(std::move(item));
    }
  }
  return Value::generator(std::move(out));
}

Value f_wordcount(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "wordcount", {});
  std::string s = soft_str(v);
  int64_t words = 0;
  bool in_word = false;
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = py::next_code_point(s, i);
    bool word_char = py::is_word_char(cp);
    if (word_char && !in_word) ++words;
    in_word = word_char;
  }
  return Value(words);
}

// ---- tests ----

bool t_defined(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "defined", {});
  return !v.is_undefined();
}
bool t_undefined(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "undefined", {});
  return v.is_undefined();
}
bool t_none(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "none", {});
  return v.is_none();
}
bool t_boolean(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "boolean", {});
  return v.is_bool();
}
bool t_true(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "true", {});
  return v.is_bool() && v.as_bool();
}
bool t_false(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "false", {});
  return v.is_bool() && !v.as_bool();
}
bool t_integer(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "integer", {});
  return v.is_int();
}
bool t_float(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "float", {});
  return v.is_float();
}
bool t_number(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "number", {});
  return v.is_number();
}
bool t_string(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "string", {});
  return v.is_string();
}
bool t_mapping(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "mapping", {});
  return v.is_dict();
}
bool t_callable(Interpreter&, const Value& v, CallArgs& args) {
  bind_args(args, "callable", {});
  return v.kind() == Kind::Callable || v.is_undefined();  // jinja2's Undefined defines __call__
}
bool t_escaped(Interpreter&, const Value&, CallArgs&) { return false; }
bool t_sequence(Interpreter&, const Value& v, CallArgs&) {
  // len() and __getitem__: strings, lists, tuples, dicts, and jinja2's Undefined.
  return v.is_string() || is_plain_sequence(v) || v.is_dict() || v.is_undefined();
}
bool t_iterable(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() || v.is_list() || v.is_dict() || v.kind() == Kind::Generator || v.is_undefined();
}
bool t_lower(Interpreter&, const Value& v, CallArgs&) {
  std::string s = to_str(v);
  return py::lower(s) == s && py::upper(s) != s;
}
bool t_upper(Interpreter&, const Value& v, CallArgs&) {
  std::string s = to_str(v);
  return py::upper(s) == s && py::lower(s) != s;
}

int64_t integer_operand(const Value& v) {
  if (v.is_undefined()) raise_undefined(v);
  if (!v.is_integral()) type_error(std::string("unsupported operand type(s) for %: '") + v.type_name() + "' and 'int'");
  return v.integer();
}
bool t_odd(Interpreter&, const Value& v, CallArgs&) { return py_mod(integer_operand(v), 2) == 1; }
bool t_even(Interpreter&, const Value& v, CallArgs&) { return py_mod(integer_operand(v), 2) == 0; }
bool t_divisibleby(Interpreter&, const Value& v, CallArgs& args) {
  auto a = bind_args(args, "divisibleby", {"num"}, 1);
  int64_t d = integer_operand(a[0]);
  if (d == 0) throw TemplateError("ZeroDivisionError", "integer division or modulo by zero");
  return py_mod(integer_operand(v), d) == 0;
}
const Value& other_operand(CallArgs& args, const char* name) {
  if (args.positional.size() + args.keyword.size() != 1) type_error(std::string(name) + "() takes exactly one argument");
  return args.positional.empty() ? args.keyword[0].second : args.positional[0];
}
bool t_eq(Interpreter&, const Value& v, CallArgs& args) { return equals(v, other_operand(args, "eq")); }
bool t_ne(Interpreter&, const Value& v, CallArgs& args) { return !equals(v, other_operand(args, "ne")); }
bool t_lt(Interpreter&, const Value& v, CallArgs& args) { return less_than(v, other_operand(args, "lt")); }
bool t_gt(Interpreter&, const Value& v, CallArgs& args) { return less_than(other_operand(args, "gt"), v); }
bool t_le(Interpreter&, const Value& v, CallArgs& args) {
  const Value& o = other_operand(args, "le");
  return less_than(v, o) || equals(v, o);
}
bool t_ge(Interpreter&, const Value& v, CallArgs& args) {
  const Value& o = other_operand(args, "ge");
  return less_than(o, v) || equals(v, o);
}
bool t_in(Interpreter& in, const Value& v, CallArgs& args) { return contains(in, other_operand(args, "in"), v); }
bool t_sameas(Interpreter&, const Value& v, CallArgs& args) {
  const Value& o = other_operand(args, "sameas");
  if (v.kind() != o.kind()) return false;
  return equals(v, o);
}
bool t_filter(Interpreter&, const Value& v, CallArgs&) { return v.is_string() && find_filter(v.as_string()) != nullptr; }
bool t_test(Interpreter&, const Value& v, CallArgs&) { return v.is_string() && find_test(v.as_string()) != nullptr; }

}  // namespace

Value binary_arithmetic(Interpreter& in, BinaryOp op, const Value& a, const Value& b) {
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  static const char* kSymbols[] = {"+", "-", "*", "/", "//", "%", "**", "~", "and", "or"};
  const char* symbol = kSymbols[static_cast<int>(op)];
  if (a.is_number() && b.is_number()) {
    if (!a.is_float() && !b.is_float()) {
      int64_t x = a.integer(), y = b.integer();
      switch (op) {
        case BinaryOp::Add: return Value(add_checked(x, y));
        case BinaryOp::Sub: return Value(sub_checked(x, y));
        case BinaryOp::Mul: return Value(mul_checked(x, y));
        case BinaryOp::Div:
          if (y == 0) throw TemplateError("ZeroDivisionError", "division by zero");
          return Value(static_cast<double>(x) / static_cast<double>(y));
        case BinaryOp::FloorDiv:
          if (y == 0) throw TemplateError("ZeroDivisionError", "integer division or modulo by zero");
          return Value(floor_div(x, y));
        case BinaryOp::Mod:
          if (y == 0) throw TemplateError("ZeroDivisionError", "integer modulo by zero");
          return Value(py_mod(x, y));
        case BinaryOp::Pow: {
          if (y < 0) {
            if (x == 0) throw TemplateError("ZeroDivisionError", "0.0 cannot be raised to a negative power");
            return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
          }
          int64_t result = 1, base = x;
          for (int64_t e = y; e > 0; e >>= 1) {
            if (e & 1) result = mul_checked(result, base);
            if (e > 1) base = mul_checked(base, base);
          }
          return Value(result);
        }
        default: break;
      }
    } else {
      double x = a.number(), y = b.number();
      switch (op) {
        case BinaryOp::Add: return Value(x + y);
        case BinaryOp::Sub: return Value(x - y);
        case BinaryOp::Mul: return Value(x * y);
        case BinaryOp::Div:
          if (y == 0) throw TemplateError("ZeroDivisionError", "float division by zero");
          return Value(x / y);
        case BinaryOp::FloorDiv:
          if (y == 0) throw TemplateError("ZeroDivisionError", "float floor division by zero");
          return Value(std::floor(x / y));
        case BinaryOp::Mod: {
          if (y == 0) throw TemplateError("ZeroDivisionError", "float modulo");
          double r = std::fmod(x, y);
          if (r != 0 && ((r < 0) != (y < 0))) r += y;
          return Value(r);
        }
        case BinaryOp::Pow:
          if (x == 0 && y < 0) throw TemplateError("ZeroDivisionError", "0.0 cannot be raised to a negative power");
          if (x < 0 && std::floor(y) != y) value_error("a negative number to a fractional power (complex result)");
          return Value(std::pow(x, y));
        default: break;
      }
    }
  }
  if (op == BinaryOp::Add) {
    // Markup + x and x + Markup escape x and stay Markup (Python gives the str subclass's __radd__ priority).
    if ((a.is_markup() && b.is_string()) || (b.is_markup() && a.is_string())) {
      std::string left = a.is_markup() ? a.as_string() : html_escape(to_str(a));
      std::string right = b.is_markup() ? b.as_string() : html_escape(to_str(b));
      in.check_length(left.size() + right.size());
      in.charge_bytes(left.size() + right.size());
      return Value::markup(left + right);
    }
    if (a.is_string() && b.is_string()) {
      in.check_length(a.as_string().size() + b.as_string().size());
      return in.new_string(a.as_string() + b.as_string());
    }
    if (is_plain_sequence(a) && is_plain_sequence(b) && a.as_list().kind == b.as_list().kind) {
      std::vector<Value> items = a.as_list().items;
      items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
      return in.new_list(std::move(items), a.as_list().kind);
    }
    if (a.is_string() || is_plain_sequence(a))
      type_error(std::string("can only concatenate ") + a.type_name() + " (not \"" + b.type_name() + "\") to " +
                 a.type_name());
  }
  if (op == BinaryOp::Mul) {
    if ((a.is_string() || is_plain_sequence(a)) && b.is_integral()) return repeat(in, a, b.integer());
    if ((b.is_string() || is_plain_sequence(b)) && a.is_integral()) return repeat(in, b, a.integer());
  }
  if (op == BinaryOp::Mod && a.is_string()) return in.new_string(percent_format(a.as_string(), b));
  type_error(std::string("unsupported operand type(s) for ") + symbol + ": '" + a.type_name() + "' and '" +
             b.type_name() + "'");
}

bool contains(Interpreter& in, const Value& container, const Value& item) {
  switch (container.kind()) {
    case Kind::String:
      if (!item.is_string())
        type_error(std::string("'in <string>' requires string as left operand, not ") + item.type_name());
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Kind::List:
      for (const Value& x : container.as_list().items)
        if (equals(x, item)) return true;
      return false;
    case Kind::Dict:
      return container.as_dict().find(item) != nullptr;
    case Kind::Undefined:
      return false;
    case Kind::Generator: {
      GeneratorData& g = container.as_generator();
      while (g.next < g.items.size())
        if (equals(g.items[g.next++], item)) return true;
      return false;
    }
    default:
      (void)in;
      type_error(std::string("argument of type '") + container.type_name() + "' is not iterable");
  }
}

FilterFunction find_filter(const std::string& name) {
  static const std::unordered_map<std::string, FilterFunction> kFilters = {
      {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
      {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape},
      {"escape", f_escape}, {"first", f_first}, {"float", f_float}, {"format", f_format}, {"indent", f_indent},
      {"int", f_int}, {"items", f_items}, {"join", f_join}, {"last", f_last}, {"length", f_length},
      {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"max", f_max}, {"min", f_min},
      {"reject", f_reject}, {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse},
      {"round", f_round}, {"safe", f_safe}, {"select", f_select}, {"selectattr", f_selectattr}, {"sort", f_sort},
      {"string", f_string}, {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim},
      {"truncate", f_truncate}, {"unique", f_unique}, {"upper", f_upper}, {"wordcount", f_wordcount},
  };
  auto it = kFilters.find(name);
  return it == kFilters.end() ? nullptr : it->second;
}

TestFunction find_test(const std::string& name) {
  static const std::unordered_map<std::string, TestFunction> kTests = {
      {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined}, {"divisibleby", t_divisibleby},
      {"eq", t_eq}, {"equalto", t_eq}, {"==", t_eq}, {"escaped", t_escaped}, {"even", t_even},
      {"false", t_false}, {"filter", t_filter}, {"float", t_float}, {"ge", t_ge}, {">=", t_ge}, {"gt", t_gt},
      {"greaterthan", t_gt}, {">", t_gt}, {"in", t_in}, {"integer", t_integer}, {"iterable", t_iterable},
      {"le", t_le}, {"<=", t_le}, {"lower", t_lower}, {"lt", t_lt}, {"lessthan", t_lt}, {"<", t_lt},
      {"mapping", t_mapping}, {"ne", t_ne}, {"!=", t_ne}, {"none", t_none}, {"number", t_number},
      {"odd", t_odd}, {"sameas", t_sameas}, {"sequence", t_sequence}, {"string", t_string}, {"test", t_test},
      {"true", t_true}, {"undefined", t_undefined}, {"upper", t_upper},
  };
  auto it = kTests.find(name);
  return it == kTests.end() ? nullptr : it->second;
}

}  // namespace kvtier::jinja
