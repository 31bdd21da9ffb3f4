// Python's str/dict/list methods as templates call them (`s.split('x')`, `d.get('k')`), refused mutation
// methods (the ImmutableSandboxedEnvironment's rule), str.format, and the global functions.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "template/interpreter.h"
#include "template/py_string.h"

namespace kvtier::jinja {

namespace {

std::string str_arg(const Value& v, const char* method) {
  if (!v.is_string()) type_error(std::string(method) + "() argument must be str, not " + v.type_name());
  return v.as_string();
}

// The optional "chars"/"sep" argument of strip/split: nullptr when absent or None.
const std::string* optional_str(const Value& v, std::string& storage, const char* method) {
  if (v.is_undefined() || v.is_none()) return nullptr;
  storage = str_arg(v, method);
  return &storage;
}

Value string_list(Interpreter& in, const std::vector<std::string>& parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (const std::string& p : parts) items.emplace_back(p);
  return in.new_list(std::move(items));
}

// A code-point index into s for str.find's start/end (Python's slice clamping), as a byte offset.
size_t byte_offset(const std::string& s, const Value& index, bool is_end) {
  if (index.is_undefined() || index.is_none()) return is_end ? s.size() : 0;
  if (!index.is_integral()) type_error("slice indices must be integers or None");
  std::vector<size_t> offsets = py::code_point_offsets(s);
  int64_t n = static_cast<int64_t>(offsets.size() - 1);
  int64_t i = index.integer();
  if (i < 0) i = std::max<int64_t>(0, i + n);
  if (i > n) i = n;
  return offsets[static_cast<size_t>(i)];
}

int64_t code_point_index(const std::string& s, size_t byte) {
  return static_cast<int64_t>(py::length(std::string_view(s).substr(0, byte)));
}

bool affix_matches(const std::string& s, const Value& affix, bool at_start, size_t begin, size_t end) {
  auto one = [&](const Value& v) {
    std::string a = str_arg(v, at_start ? "startswith" : "endswith");
    if (end < begin || end - begin < a.size()) return false;
    return at_start ? s.compare(begin, a.size(), a) == 0 : s.compare(end - a.size(), a.size(), a) == 0;
  };
  if (affix.is_list() && affix.as_list().kind == SeqKind::Tuple) {
    return std::any_of(affix.as_list().items.begin(), affix.as_list().items.end(), one);
  }
  return one(affix);
}

// str.format's format spec: [[fill]align][sign][0][width][,][.precision][type].
std::string format_spec(const Value& v, const std::string& spec) {
  size_t i = 0;
  std::string fill = " ";
  char align = '\0';
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (spec.size() >= 2 && is_align(spec[1]) && static_cast<uint8_t>(spec[0]) < 0x80) {
    fill = spec.substr(0, 1);
    align = spec[1];
    i = 2;
  } else if (!spec.empty() && is_align(spec[0])) {
    align = spec[0];
    i = 1;
  }
  char sign = '-';
  if (i < spec.size() && (spec[i] == '+' || spec[i] == '-' || spec[i] == ' ')) sign = spec[i++];
  if (i < spec.size() && spec[i] == '0') {
    if (!align) {
      fill = "0";
      align = '=';
    }
    ++i;
  }
  size_t width = 0;
  while (i < spec.size() && spec[i] >= '0' && spec[i] <= '9') {
    width = width * 10 + static_cast<size_t>(spec[i++] - '0');
    if (width > 4096) value_error("format width too large");
  }
  bool thousands = i < spec.size() && spec[i] == ',';
  if (thousands) ++i;
  int precision = -1;
  if (i < spec.size() && spec[i] == '.') {
    precision = 0;
    ++i;
    while (i < spec.size() && spec[i] >= '0' && spec[i] <= '9') {
      precision = precision * 10 + (spec[i++] - '0');
      if (precision > 300) value_error("format precision too large");
    }
  }
  char type = i < spec.size() ? spec[i++] : '\0';
  if (i != spec.size()) value_error("Invalid format specifier '" + spec + "'");

  std::string body;
  bool numeric = false;
  if (type == 's' || (type == '\0' && !v.is_number())) {
    if (!v.is_string() && type == 's') value_error("Unknown format code 's' for object of type '" + std::string(v.type_name()) + "'");
    body = to_str(v);
    if (precision >= 0) {
      std::vector<size_t> offsets = py::code_point_offsets(body);
      if (static_cast<size_t>(precision) < offsets.size() - 1) body.resize(offsets[static_cast<size_t>(precision)]);
    }
    if (!align) align = '<';
  } else {
    if (!v.is_number()) value_error(std::string("Unknown format code '") + type + "' for object of type '" + v.type_name() + "'");
    numeric = true;
    char buf[1024];
    if (type == 'd' || ((type == '\0') && v.is_integral())) {
      if (!v.is_integral()) value_error("Unknown format code 'd' for object of type 'float'");
      std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v.integer()));
      body = buf;
    } else if (type == 'x' || type == 'X' || type == 'o' || type == 'b') {
      if (!v.is_integral()) value_error(std::string("Unknown format code '") + type + "' for object of type 'float'");
      long long n = v.integer();
      bool negative = n < 0;
      unsigned long long u = negative ? 0ULL - static_cast<unsigned long long>(n) : static_cast<unsigned long long>(n);
      unsigned base = type == 'o' ? 8 : type == 'b' ? 2 : 16;
      const char* digits = type == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
      do {
        body.insert(body.begin(), digits[u % base]);
        u /= base;
      } while (u);
      if (negative) body.insert(body.begin(), '-');
    } else if (type == '\0' && v.is_float()) {
      body = precision >= 0 ? (std::snprintf(buf, sizeof(buf), "%.*g", precision, v.as_float()), std::string(buf))
                            : float_repr(v.as_float());
    } else if (std::strchr("eEfFgG%", type)) {
      double d = v.number() * (type == '%' ? 100.0 : 1.0);
      char conv = type == '%' ? 'f' : type;
      std::snprintf(buf, sizeof(buf), (std::string("%.*") + conv).c_str(), precision < 0 ? 6 : precision, d);
      body = buf;
      if (type == '%') body += '%';
    } else {
      value_error(std::string("Unknown format code '") + type + "'");
    }
    if (thousands) {
      size_t start = body[0] == '-' ? 1 : 0;
      size_t end = body.find_first_not_of("0123456789", start);
      if (end == std::string::npos) end = body.size();
      for (size_t k = end; k > start + 3; k -= 3) body.insert(k - 3, ",");
    }
    if (sign != '-' && body[0] != '-') body.insert(body.begin(), sign);
    if (!align) align = '>';
  }
  size_t len = py::length(body);
  if (width <= len) return body;
  size_t pad = width - len;
  auto fills = [&](size_t n) {
    std::string s;
    for (size_t k = 0; k < n; ++k) s += fill;
    return s;
  };
  switch (align) {
    case '<': return body + fills(pad);
    case '^': return fills(pad / 2) + body + fills(pad - pad / 2);
    case '=':
      if (numeric && !body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' '))
        return body.substr(0, 1) + fills(pad) + body.substr(1);
      return fills(pad) + body;
    default: return fills(pad) + body;
  }
}

// str.format(*args, **kwargs): {}, {0}, {name}, {0.attr}, {0[key]}, !r/!s conversions, format specs.
std::string str_format(Interpreter& in, const std::string& format, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      value_error("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = format.find('}', i);
    if (close == std::string::npos) value_error("Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    std::string spec, conversion;
    if (size_t colon = field.find(':'); colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field.resize(colon);
    }
    if (size_t bang = field.find('!'); bang != std::string::npos) {
      conversion = field.substr(bang + 1);
      field.resize(bang);
    }
    size_t name_end = field.find_first_of(".[");
    std::string name = field.substr(0, name_end);
    Value v;
    if (name.empty()) {
      if (auto_index >= args.positional.size()) throw TemplateError("IndexError", "Replacement index " + std::to_string(auto_index) + " out of range for positional args tuple");
      v = args.positional[auto_index++];
    } else if (std::all_of(name.begin(), name.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      size_t k = static_cast<size_t>(std::strtoul(name.c_str(), nullptr, 10));
      if (name.size() > 6 || k >= args.positional.size()) throw TemplateError("IndexError", "Replacement index " + name + " out of range for positional args tuple");
      v = args.positional[k];
    } else {
      auto it = std::find_if(args.keyword.begin(), args.keyword.end(), [&](auto& kv) { return kv.first == name; });
      if (it == args.keyword.end()) throw TemplateError("KeyError", "'" + name + "'");
      v = it->second;
    }
    for (size_t p = name_end; p != std::string::npos && p < field.size();) {
      if (field[p] == '.') {
        size_t next = field.find_first_of(".[", p + 1);
        v = in.getattr(v, field.substr(p + 1, next == std::string::npos ? std::string::npos : next - p - 1));
        p = next;
      } else {
        size_t end = field.find(']', p);
        if (end == std::string::npos) value_error("Missing ']' in format string");
        std::string key = field.substr(p + 1, end - p - 1);
        bool numeric = !key.empty() && key.size() < 18 && std::all_of(key.begin(), key.end(), [](char d) { return d >= '0' && d <= '9'; });
        v = in.getitem(v, numeric ? Value(static_cast<int64_t>(std::strtoll(key.c_str(), nullptr, 10))) : Value(key));
        p = end + 1;
      }
    }
    if (conversion == "r" || conversion == "a") v = Value(to_repr(v));
    else if (conversion == "s") v = Value(to_str(v));
    else if (!conversion.empty()) value_error("Unknown conversion specifier " + conversion);
    out += spec.empty() ? to_str(v) : format_spec(v, spec);
    in.check_length(out.size());
  }
  return out;
}

Value string_method(Interpreter& in, const std::string& s, const std::string& name, CallArgs& args) {
  std::string storage;
  if (name == "upper") return bind_args(args, "upper", {}), in.new_string(py::upper(s));
  if (name == "lower") return bind_args(args, "lower", {}), in.new_string(py::lower(s));
  if (name == "title") return bind_args(args, "title", {}), in.new_string(py::title(s));
  if (name == "capitalize") return bind_args(args, "capitalize", {}), in.new_string(py::capitalize(s));
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    auto a = bind_args(args, name.c_str(), {"chars"});
    return in.new_string(py::strip(s, optional_str(a[0], storage, name.c_str()), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    auto a = bind_args(args, name.c_str(), {"sep", "maxsplit"});
    const std::string* sep = optional_str(a[0], storage, name.c_str());
    if (sep && sep->empty()) value_error("empty separator");
    int64_t maxsplit = a[1].is_undefined() ? -1 : a[1].integer();
    return string_list(in, name == "split" ? py::split(s, sep, maxsplit) : py::rsplit(s, sep, maxsplit));
  }
  if (name == "splitlines") {
    auto a = bind_args(args, "splitlines", {"keepends"});
    return string_list(in, py::splitlines(s, a[0].truthy()));
  }
  if (name == "startswith" || name == "endswith") {
    auto a = bind_args(args, name.c_str(), {"prefix", "start", "end"}, 1);
    return Value(affix_matches(s, a[0], name == "startswith", byte_offset(s, a[1], false), byte_offset(s, a[2], true)));
  }
  if (name == "replace") {
    auto a = bind_args(args, "replace", {"old", "new", "count"}, 2);
    std::string old = str_arg(a[0], "replace"), replacement = str_arg(a[1], "replace");
    size_t occurrences = old.empty() ? py::length(s) + 1 : py::count(s, old);
    if (replacement.size() > old.size()) in.check_length(s.size() + occurrences * (replacement.size() - old.size()));
    return in.new_string(py::replace(s, old, replacement, a[2].is_undefined() ? -1 : a[2].integer()));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    auto a = bind_args(args, name.c_str(), {"sub", "start", "end"}, 1);
    std::string sub = str_arg(a[0], name.c_str());
    size_t begin = byte_offset(s, a[1], false), end = byte_offset(s, a[2], true);
    size_t at = std::string::npos;
    if (end >= begin && end - begin >= sub.size()) {
      std::string_view window(s.data() + begin, end - begin);
      at = name[0] == 'r' ? window.rfind(sub) : window.find(sub);
    }
    if (at == std::string::npos) {
      if (name == "index" || name == "rindex") value_error("substring not found");
      return Value(-1);
    }
    return Value(code_point_index(s, begin + at));
  }
  if (name == "count") {
    auto a = bind_args(args, "count", {"sub"}, 1);
    return Value(static_cast<int64_t>(py::count(s, str_arg(a[0], "count"))));
  }
  if (name == "join") {
    auto a = bind_args(args, "join", {"iterable"}, 1);
    std::string out;
    bool first = true;
    for (const Value& item : in.iterate(a[0])) {
      if (!item.is_string()) type_error(std::string("sequence item: expected str instance, ") + item.type_name() + " found");
      if (!first) out += s;
      first = false;
      out += item.as_string();
      in.check_length(out.size());
    }
    return in.new_string(std::move(out));
  }
  if (name == "format") return in.new_string(str_format(in, s, args));
  if (name == "removeprefix" || name == "removesuffix") {
    auto a = bind_args(args, name.c_str(), {"affix"}, 1);
    std::string affix = str_arg(a[0], name.c_str());
    if (name == "removeprefix" && s.compare(0, affix.size(), affix) == 0) return Value(s.substr(affix.size()));
    if (name == "removesuffix" && !affix.empty() && s.size() >= affix.size() &&
        s.compare(s.size() - affix.size(), affix.size(), affix) == 0)
      return Value(s.substr(0, s.size() - affix.size()));
    return Value(s);
  }
  if (name == "partition" || name == "rpartition") {
    auto a = bind_args(args, name.c_str(), {"sep"}, 1);
    std::string sep = str_arg(a[0], name.c_str());
    if (sep.empty()) value_error("empty separator");
    size_t at = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (at == std::string::npos)
      return name == "partition" ? in.new_list({Value(s), Value(""), Value("")}, SeqKind::Tuple)
                                 : in.new_list({Value(""), Value(""), Value(s)}, SeqKind::Tuple);
    return in.new_list({Value(s.substr(0, at)), Value(sep), Value(s.substr(at + sep.size()))}, SeqKind::Tuple);
  }
  auto all_chars = [&](auto&& predicate) {
    if (s.empty()) return Value(false);
    return Value(std::all_of(s.begin(), s.end(), predicate));
  };
  if (name == "isdigit" || name == "isnumeric" || name == "isdecimal")
    return bind_args(args, name.c_str(), {}), all_chars([](char c) { return c >= '0' && c <= '9'; });
  if (name == "isalpha")
    return bind_args(args, "isalpha", {}), all_chars([](char c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; });
  if (name == "isalnum")
    return bind_args(args, "isalnum", {}),
           all_chars([](char c) { return ((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= '0' && c <= '9'); });
  if (name == "isspace") {
    bind_args(args, "isspace", {});
    return Value(!s.empty() && py::strip(s, nullptr, true, true).empty());
  }
  if (name == "isupper" || name == "islower") {
    bind_args(args, name.c_str(), {});
    bool has_cased = std::any_of(s.begin(), s.end(), [](char c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; });
    return Value(has_cased && (name == "isupper" ? py::upper(s) == s : py::lower(s) == s));
  }
  if (name == "ljust" || name == "rjust" || name == "center" || name == "zfill") {
    auto a = bind_args(args, name.c_str(), {"width", "fillchar"}, 1);
    if (!a[0].is_integral()) type_error("an integer is required");
    int64_t width = a[0].integer();
    int64_t len = static_cast<int64_t>(py::length(s));
    if (width <= len) return Value(s);
    in.check_length(static_cast<size_t>(width) * 4);
    std::string fill = name == "zfill" ? "0" : a[1].is_undefined() ? " " : str_arg(a[1], name.c_str());
    if (py::length(fill) != 1) type_error("The fill character must be exactly one character long");
    size_t pad = static_cast<size_t>(width - len);
    auto fills = [&](size_t n) {
      std::string out;
      for (size_t k = 0; k < n; ++k) out += fill;
      return out;
    };
    if (name == "ljust") return in.new_string(s + fills(pad));
    if (name == "rjust") return in.new_string(fills(pad) + s);
    if (name == "zfill") {
      if (!s.empty() && (s[0] == '-' || s[0] == '+')) return in.new_string(s.substr(0, 1) + fills(pad) + s.substr(1));
      return in.new_string(fills(pad) + s);
    }
    size_t left = pad / 2 + (pad & static_cast<size_t>(width) & 1);
    return in.new_string(fills(left) + s + fills(pad - left));
  }
  throw TemplateError("AttributeError", "'str' object has no attribute '" + name + "'");
}

Value dict_method(Interpreter& in, const Value& self, const std::string& name, CallArgs& args) {
  const DictData& d = self.as_dict();
  if (name == "get") {
    auto a = bind_args(args, "get", {"key", "default"}, 1);
    const Value* v = d.find(a[0]);
    return v ? *v : (a[1].is_undefined() ? Value(nullptr) : a[1]);
  }
  std::vector<Value> out;
  if (name == "items") {
    bind_args(args, "items", {});
    for (const auto& [k, v] : d.entries) out.push_back(Value::list({k, v}, SeqKind::Tuple));
    return in.new_list(std::move(out), SeqKind::DictItems);
  }
  if (name == "keys" || name == "values") {
    bind_args(args, name.c_str(), {});
    for (const auto& [k, v] : d.entries) out.push_back(name == "keys" ? k : v);
    return in.new_list(std::move(out), name == "keys" ? SeqKind::DictKeys : SeqKind::DictValues);
  }
  if (name == "copy") return bind_args(args, "copy", {}), Value::dict(d);
  throw TemplateError("AttributeError", "'dict' object has no attribute '" + name + "'");
}

Value list_method(Interpreter&, const Value& self, const std::string& name, CallArgs& args) {
  const auto& items = self.as_list().items;
  if (name == "index") {
    auto a = bind_args(args, "index", {"value"}, 1);
    for (size_t i = 0; i < items.size(); ++i)
      if (equals(items[i], a[0])) return Value(static_cast<int64_t>(i));
    value_error(to_repr(a[0]) + " is not in list");
  }
  if (name == "count") {
    auto a = bind_args(args, "count", {"value"}, 1);
    return Value(static_cast<int64_t>(std::count_if(items.begin(), items.end(), [&](const Value& x) { return equals(x, a[0]); })));
  }
  if (name == "copy") return bind_args(args, "copy", {}), Value::list(items, SeqKind::List);
  throw TemplateError("AttributeError", "'list' object has no attribute '" + name + "'");
}

bool is_one_of(const std::string& name, std::initializer_list<const char*> names) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return name == n; });
}

}  // namespace

std::optional<Value> find_method(Interpreter& in, const Value& object, const std::string& name) {
  (void)in;
  auto refused = [&](const char* type) {
    return Value::undefined(std::string("SecurityError: access to attribute '") + name + "' of '" + type +
                            "' object is unsafe.");
  };
  auto bind = [&](auto method) {
    Value self = object;
    return Value::callable(
        name, [self, name = name, method](Interpreter& interp, CallArgs& args) -> Value { return method(interp, self, name, args); },
        /*is_macro=*/false, self.nesting());
  };
  switch (object.kind()) {
    case Kind::String:
      if (is_one_of(name, {"upper", "lower", "title", "capitalize", "strip", "lstrip", "rstrip", "split", "rsplit",
                           "splitlines", "startswith", "endswith", "replace", "find", "rfind", "index", "rindex",
                           "count", "join", "format", "removeprefix", "removesuffix", "partition", "rpartition",
                           "isdigit", "isnumeric", "isdecimal", "isalpha", "isalnum", "isspace", "isupper",
                           "islower", "ljust", "rjust", "center", "zfill"}))
        return bind([](Interpreter& i, const Value& self, const std::string& n, CallArgs& a) {
          return string_method(i, self.as_string(), n, a);
        });
      return std::nullopt;
    case Kind::Dict:
      if (is_one_of(name, {"get", "items", "keys", "values", "copy"})) return bind(dict_method);
      if (is_one_of(name, {"pop", "popitem", "update", "setdefault", "clear"})) return refused("dict");
      return std::nullopt;
    case Kind::List: {
      SeqKind kind = object.as_list().kind;
      if (kind != SeqKind::List && kind != SeqKind::Tuple) return std::nullopt;
      if (is_one_of(name, {"index", "count"}) || (kind == SeqKind::List && name == "copy")) return bind(list_method);
      if (kind == SeqKind::List && is_one_of(name, {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"}))
        return refused("list");
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

// ---- globals ----

namespace {

Value g_range(Interpreter& in, CallArgs& args) {
  if (!args.keyword.empty() || args.positional.empty() || args.positional.size() > 3)
    type_error("range expected 1 to 3 integer arguments");
  for (const Value& v : args.positional)
    if (!v.is_integral()) type_error(std::string("'") + v.type_name() + "' object cannot be interpreted as an integer");
  int64_t start = 0, stop, step = 1;
  if (args.positional.size() == 1) {
    stop = args.positional[0].integer();
  } else {
    start = args.positional[0].integer();
    stop = args.positional[1].integer();
    if (args.positional.size() == 3) step = args.positional[2].integer();
  }
  if (step == 0) value_error("range() arg 3 must not be zero");
  // The sandbox's MAX_RANGE.
  constexpr int64_t kMaxRange = 100000;
  std::vector<Value> items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (static_cast<int64_t>(items.size()) >= kMaxRange)
      throw TemplateError("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    items.emplace_back(i);
    if ((step > 0 && i > std::numeric_limits<int64_t>::max() - step) || (step < 0 && i < std::numeric_limits<int64_t>::min() - step)) break;
  }
  return in.new_list(std::move(items));
}

void add_mapping_entries(DictData& into, const Value& source, Interpreter& in) {
  auto put = [&](const Value& k, const Value& v) {
    for (auto& e : into.entries)
      if (equals(e.first, k)) {
        e.second = v;
        return;
      }
    into.entries.emplace_back(k, v);
  };
  if (source.is_dict()) {
    for (const auto& [k, v] : source.as_dict().entries) put(k, v);
    return;
  }
  for (const Value& pair : in.iterate(source)) {
    std::vector<Value> kv = in.iterate(pair);
    if (kv.size() != 2) value_error("dictionary update sequence element has length " + std::to_string(kv.size()) + "; 2 is required");
    put(kv[0], kv[1]);
  }
}

Value g_dict(Interpreter& in, CallArgs& args) {
  if (args.positional.size() > 1) type_error("dict expected at most 1 argument");
  DictData d;
  if (!args.positional.empty()) add_mapping_entries(d, args.positional[0], in);
  for (auto& [k, v] : args.keyword) {
    DictData one;
    one.entries.emplace_back(Value(k), v);
    add_mapping_entries(d, Value::dict(std::move(one)), in);
  }
  in.charge_bytes(d.entries.size() * 2 * sizeof(Value));
  return Value::dict(std::move(d));
}

Value g_namespace(Interpreter& in, CallArgs& args) {
  NamespaceData* ns = in.new_namespace();
  Value d = g_dict(in, args);
  for (const auto& [k, v] : d.as_dict().entries) {
    if (!k.is_string()) type_error("namespace attribute names must be strings");
    ns->attributes.entries.emplace_back(k, v);
  }
  return Value::namespace_object(ns);
}

Value g_raise_exception(Interpreter&, CallArgs& args) {
  auto a = bind_args(args, "raise_exception", {"message"}, 1);
  throw TemplateError("TemplateError", to_str(a[0]));
}

Value g_strftime_now(Interpreter& in, CallArgs& args) {
  auto a = bind_args(args, "strftime_now", {"format"}, 1);
  std::string format = to_str(a[0]);
  if (format.empty()) return Value(std::string());
  if (format.size() > 1024) value_error("strftime format too long");
  std::tm now = in.now();
  std::vector<char> buf(format.size() * 64 + 256);
  size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &now);
  return in.new_string(std::string(buf.data(), n));
}

Value g_joiner(Interpreter&, CallArgs& args) {
  auto a = bind_args(args, "joiner", {"sep"});
  std::string sep = a[0].is_undefined() ? ", " : to_str(a[0]);
  auto used = std::make_shared<bool>(false);
  return Value::callable("joiner", [sep, used](Interpreter&, CallArgs&) -> Value {
    if (!*used) {
      *used = true;
      return Value(std::string());
    }
    return Value(sep);
  });
}

}  // namespace

void install_globals(Scope& globals) {
  globals.set("range", Value::callable("range", g_range));
  globals.set("dict", Value::callable("dict", g_dict));
  globals.set("namespace", Value::callable("namespace", g_namespace));
  globals.set("joiner", Value::callable("joiner", g_joiner));
  globals.set("raise_exception", Value::callable("raise_exception", g_raise_exception));
  globals.set("strftime_now", Value::callable("strftime_now", g_strftime_now));
}

}  // namespace kvtier::jinja
