// The ChatTemplate API: parse once, render with a JSON context; the interpreter's errors become Results.
#include "kvtier/chat_template.h"

#include <chrono>
#include <new>

#include "template/ast.h"
#include "template/interpreter.h"
#include "template/parser.h"

namespace kvtier {

namespace {

using jinja::DictData;
using jinja::Value;

constexpr int kMaxJsonDepth = 256;

// JSON -> template value: objects keep their iteration order (insertion order for ordered_json).
template <class Json>
Value from_json(const Json& j, int depth) {
  if (depth > kMaxJsonDepth) throw jinja::TemplateError("LimitError", "context nested too deeply");
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value(nullptr);
    case nlohmann::json::value_t::boolean: return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return Value(static_cast<int64_t>(u));
      return Value(static_cast<double>(u));
    }
    case nlohmann::json::value_t::number_float: return Value(j.template get<double>());
    case nlohmann::json::value_t::string: return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(from_json(item, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      DictData d;
      d.entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d.entries.emplace_back(Value(it.key()), from_json(it.value(), depth + 1));
      return Value::dict(std::move(d));
    }
    default:
      throw jinja::TemplateError("TypeError", "unsupported JSON value in the context (binary or discarded)");
  }
}

std::tm current_local_time() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&t, &local);
  return local;
}

template <class Json>
Result<std::string> render_json(const jinja::Program& program, const Json& context,
                                const TemplateRenderOptions& options) {
  if (!context.is_object()) return Status::error("template context must be a JSON object");
  try {
    Value values = from_json(context, 0);
    jinja::Interpreter interpreter(options, options.now ? *options.now : current_local_time());
    return interpreter.render(program, values);
  } catch (const jinja::TemplateError& e) {
    return Status::error(e.describe());
  } catch (const std::bad_alloc&) {
    return Status::error("template: out of memory while rendering");
  } catch (const std::exception& e) {
    return Status::error(std::string("template: ") + e.what());
  }
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view source) {
  try {
    std::shared_ptr<const jinja::Program> program = jinja::parse_program(source);
    return ChatTemplate(std::move(program));
  } catch (const jinja::TemplateError& e) {
    return Status::error(e.describe());
  } catch (const std::bad_alloc&) {
    return Status::error("template: out of memory while parsing");
  } catch (const std::exception& e) {
    return Status::error(std::string("template: ") + e.what());
  }
}

Result<std::string> ChatTemplate::render(const nlohmann::ordered_json& context,
                                         const TemplateRenderOptions& options) const {
  return render_json(*program_, context, options);
}

Result<std::string> ChatTemplate::render(const nlohmann::json& context, const TemplateRenderOptions& options) const {
  return render_json(*program_, context, options);
}

}  // namespace kvtier
