#include "template/parser.h"

#include <algorithm>
#include <cstdlib>
#include <initializer_list>

#include "template/lexer.h"

namespace kvtier::jinja {

namespace {

// Nesting beyond this (brackets, operator chains, blocks; real templates need under 40) is refused, so
// that a hostile template cannot exhaust the stack of the recursive-descent parser, of the interpreter that
// walks the tree, or of the tree's destructor.
constexpr int kMaxNesting = 200;

template <class Node>
ExprPtr make_expr(SourcePos pos, Node node) {
  auto e = std::make_unique<Expr>();
  e->pos = pos;
  e->node = std::move(node);
  return e;
}

template <class Node>
StmtPtr make_stmt(SourcePos pos, Node node) {
  auto s = std::make_unique<Stmt>();
  s->pos = pos;
  s->node = std::move(node);
  return s;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  std::unique_ptr<Program> run() {
    auto program = std::make_unique<Program>();
    std::string end = parse_body(program->body, {});
    (void)end;
    return program;
  }

 private:
  // ---- token stream ----
  const Token& current() const { return tokens_[index_]; }
  const Token& peek(size_t ahead = 1) const { return tokens_[std::min(index_ + ahead, tokens_.size() - 1)]; }
  const Token& advance() {
    const Token& t = tokens_[index_];
    if (index_ + 1 < tokens_.size()) ++index_;
    return t;
  }
  bool is_op(const char* op) const { return current().type == TokenType::Operator && current().text == op; }
  bool is_name(const char* name) const { return current().type == TokenType::Name && current().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::Text: return "template data";
      case TokenType::VarBegin: return "begin of print statement";
      case TokenType::VarEnd: return "end of print statement";
      case TokenType::BlockBegin: return "begin of statement block";
      case TokenType::BlockEnd: return "end of statement block";
      case TokenType::End: return "end of template";
      case TokenType::String: return "string";
      default: return t.text;
    }
  }

  [[noreturn]] void fail(const std::string& message, SourcePos pos) const {
    throw TemplateError("TemplateSyntaxError", message, pos);
  }
  [[noreturn]] void fail_here(const std::string& message) const { fail(message, current().pos); }

  void expect_op(const char* op) {
    if (!skip_op(op)) fail_here(std::string("expected '") + op + "', got '" + describe(current()) + "'");
  }
  std::string expect_name() {
    if (current().type != TokenType::Name) fail_here("expected a name, got '" + describe(current()) + "'");
    return advance().text;
  }
  void expect_block_end() {
    if (current().type != TokenType::BlockEnd)
      fail_here("expected end of statement block, got '" + describe(current()) + "'");
    advance();
  }

  // A left-associative chain (a + b + c, x|f|g, a.b.c(d)) builds a tree as deep as the chain is long: each
  // link counts toward the same nesting budget, released when the chain's parse returns.
  struct ChainGuard {
    Parser& parser;
    int links = 0;
    explicit ChainGuard(Parser& p) : parser(p) {}
    void link() {
      ++links;
      if (++parser.depth_ > kMaxNesting)
        throw TemplateError("TemplateSyntaxError", "template nested too deeply", parser.current().pos);
    }
    ~ChainGuard() { parser.depth_ -= links; }
  };

  struct DepthGuard {
    Parser& parser;
    explicit DepthGuard(Parser& p) : parser(p) {
      if (++parser.depth_ > kMaxNesting)
        throw TemplateError("TemplateSyntaxError", "template nested too deeply", parser.current().pos);
    }
    ~DepthGuard() { --parser.depth_; }
  };

  // ---- statements ----

  // Parses statements until a `{% name %}` with a name in end_names (consumed up to and including the
  // name) and returns that name; at the end of the template returns "" (an error unless end_names is empty).
  std::string parse_body(Body& body, std::initializer_list<const char*> end_names) {
    DepthGuard guard(*this);
    while (true) {
      const Token& t = current();
      switch (t.type) {
        case TokenType::End:
          if (end_names.size() != 0) {
            std::string wanted;
            for (const char* n : end_names) wanted += std::string(wanted.empty() ? "" : " or ") + "'" + n + "'";
            fail_here("Unexpected end of template. Jinja was looking for the following tags: " + wanted);
          }
          return "";
        case TokenType::Text:
          body.push_back(make_stmt(t.pos, TextStmt{t.text}));
          advance();
          break;
        case TokenType::VarBegin: {
          SourcePos pos = t.pos;
          advance();
          ExprPtr e = parse_tuple(false, true, {});
          if (current().type != TokenType::VarEnd)
            fail_here("expected end of print statement, got '" + describe(current()) + "'");
          advance();
          body.push_back(make_stmt(pos, OutputStmt{std::move(e)}));
          break;
        }
        case TokenType::BlockBegin: {
          advance();
          if (current().type != TokenType::Name) fail_here("tag name expected");
          const std::string& name = current().text;
          for (const char* end : end_names) {
            if (name == end) {
              advance();
              return name;
            }
          }
          body.push_back(parse_statement());
          break;
        }
        default:
          fail_here("unexpected '" + describe(t) + "'");
      }
    }
  }

  StmtPtr parse_statement() {
    const Token& tag = current();
    SourcePos pos = tag.pos;
    std::string name = tag.text;
    advance();
    if (name == "if") return parse_if(pos);
    if (name == "for") return parse_for(pos);
    if (name == "set") return parse_set(pos);
    if (name == "macro") return parse_macro(pos);
    if (name == "call") return parse_call_block(pos);
    if (name == "filter") return parse_filter_block(pos);
    if (name == "with") return parse_with(pos);
    if (name == "generation") {
      ScopedBlockStmt block;
      block.new_scope = false;
      expect_block_end();
      parse_body(block.body, {"endgeneration"});
      expect_block_end();
      return make_stmt(pos, std::move(block));
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail("'" + name + "' outside of a loop", pos);
      expect_block_end();
      if (name == "break") return make_stmt(pos, BreakStmt{});
      return make_stmt(pos, ContinueStmt{});
    }
    fail("Encountered unknown tag '" + name + "'.", pos);
  }

  StmtPtr parse_if(SourcePos pos) {
    IfStmt stmt;
    while (true) {
      ExprPtr condition = parse_tuple(false, false, {});
      expect_block_end();
      Body body;
      std::string end = parse_body(body, {"elif", "else", "endif"});
      stmt.branches.emplace_back(std::move(condition), std::move(body));
      if (end == "elif") continue;
      if (end == "else") {
        expect_block_end();
        parse_body(stmt.else_body, {"endif"});
      }
      expect_block_end();
      break;
    }
    return make_stmt(pos, std::move(stmt));
  }

  StmtPtr parse_for(SourcePos pos) {
    ForStmt stmt;
    stmt.target = parse_assign_target(false, {"in"});
    if (!skip_name("in")) fail_here("expected 'in', got '" + describe(current()) + "'");
    stmt.iterable = parse_tuple(false, false, {"recursive"});
    if (skip_name("if")) stmt.condition = parse_expression(true);
    if (is_name("recursive")) fail_here("recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    std::string end = parse_body(stmt.body, {"endfor", "else"});
    --loop_depth_;
    if (end == "else") {
      expect_block_end();
      parse_body(stmt.else_body, {"endfor"});
    }
    expect_block_end();
    return make_stmt(pos, std::move(stmt));
  }

  StmtPtr parse_set(SourcePos pos) {
    AssignTarget target = parse_assign_target(true, {});
    if (skip_op("=")) {
      SetStmt stmt{std::move(target), parse_tuple(false, true, {})};
      expect_block_end();
      return make_stmt(pos, std::move(stmt));
    }
    SetBlockStmt stmt;
    stmt.target = std::move(target);
    if (is_op("|")) stmt.filter = parse_filter_chain(nullptr);
    expect_block_end();
    parse_body(stmt.body, {"endset"});
    expect_block_end();
    return make_stmt(pos, std::move(stmt));
  }

  std::vector<MacroParam> parse_params() {
    std::vector<MacroParam> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam param;
      param.name = expect_name();
      if (skip_op("=")) param.default_value = parse_expression(true);
      params.push_back(std::move(param));
    }
    expect_op(")");
    return params;
  }

  StmtPtr parse_macro(SourcePos pos) {
    MacroStmt stmt;
    stmt.name = expect_name();
    stmt.params = parse_params();
    expect_block_end();
    int saved_loops = loop_depth_;
    loop_depth_ = 0;  // break/continue cannot cross a macro
    parse_body(stmt.body, {"endmacro"});
    loop_depth_ = saved_loops;
    expect_block_end();
    return make_stmt(pos, std::move(stmt));
  }

  StmtPtr parse_call_block(SourcePos pos) {
    CallBlockStmt stmt;
    if (is_op("(")) stmt.caller_params = parse_params();
    stmt.call = parse_expression(true);
    if (!std::holds_alternative<CallExpr>(stmt.call->node)) fail("expected a call after 'call'", pos);
    expect_block_end();
    int saved_loops = loop_depth_;
    loop_depth_ = 0;
    parse_body(stmt.body, {"endcall"});
    loop_depth_ = saved_loops;
    expect_block_end();
    return make_stmt(pos, std::move(stmt));
  }

  StmtPtr parse_filter_block(SourcePos pos) {
    FilterBlockStmt stmt;
    stmt.filter = parse_filter_chain(nullptr, /*start_inline=*/true);
    expect_block_end();
    parse_body(stmt.body, {"endfilter"});
    expect_block_end();
    return make_stmt(pos, std::move(stmt));
  }

  StmtPtr parse_with(SourcePos pos) {
    ScopedBlockStmt stmt;
    stmt.new_scope = true;
    while (current().type != TokenType::BlockEnd) {
      if (!stmt.assignments.empty()) expect_op(",");
      AssignTarget target = parse_assign_target(false, {});
      expect_op("=");
      stmt.assignments.emplace_back(std::move(target), parse_expression(true));
    }
    expect_block_end();
    parse_body(stmt.body, {"endwith"});
    expect_block_end();
    return make_stmt(pos, std::move(stmt));
  }

  AssignTarget parse_assign_target(bool with_namespace, std::initializer_list<const char*> extra_end) {
    AssignTarget target;
    if (with_namespace && current().type == TokenType::Name && peek().type == TokenType::Operator &&
        peek().text == ".") {
      target.names.push_back(advance().text);
      advance();
      target.attribute = expect_name();
      return target;
    }
    bool parenthesized = skip_op("(");
    while (true) {
      if (current().type != TokenType::Name) fail_here("can't assign to '" + describe(current()) + "'");
      const std::string& n = current().text;
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None" ||
          n == "in" || n == "not" || n == "and" || n == "or" || n == "is" || n == "if" || n == "else")
        fail_here("can't assign to '" + n + "'");
      target.names.push_back(advance().text);
      if (!is_op(",")) break;
      advance();
      target.is_tuple = true;
      bool at_end = current().type == TokenType::BlockEnd || is_op("=") || is_op(")");
      for (const char* e : extra_end) at_end = at_end || is_name(e);
      if (at_end) break;
    }
    if (parenthesized) {
      expect_op(")");
      target.is_tuple = true;
    }
    return target;
  }

  // ---- expressions ----

  bool is_tuple_end(std::initializer_list<const char*> extra_end) const {
    const Token& t = current();
    if (t.type == TokenType::VarEnd || t.type == TokenType::BlockEnd || t.type == TokenType::End) return true;
    if (t.type == TokenType::Operator && t.text == ")") return true;
    for (const char* e : extra_end)
      if (t.type == TokenType::Name && t.text == e) return true;
    return false;
  }

  ExprPtr parse_tuple(bool explicit_parentheses, bool with_condexpr, std::initializer_list<const char*> extra_end) {
    SourcePos pos = current().pos;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) fail_here("Expected an expression, got '" + describe(current()) + "'");
    }
    return make_expr(pos, ListExpr{std::move(items), true});
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    if (!with_condexpr) return parse_or();
    SourcePos pos = current().pos;
    ExprPtr value = parse_or();
    ChainGuard chain(*this);
    while (skip_name("if")) {
      chain.link();
      ExprPtr condition = parse_or();
      ExprPtr otherwise;
      if (skip_name("else")) otherwise = parse_expression(true);
      value = make_expr(pos, CondExpr{std::move(condition), std::move(value), std::move(otherwise)});
    }
    return value;
  }

  ExprPtr parse_or() {
    ChainGuard chain(*this);
    ExprPtr left = parse_and();
    while (is_name("or")) {
      chain.link();
      SourcePos pos = advance().pos;
      left = make_expr(pos, BinaryExpr{BinaryOp::Or, std::move(left), parse_and()});
    }
    return left;
  }

  ExprPtr parse_and() {
    ChainGuard chain(*this);
    ExprPtr left = parse_not();
    while (is_name("and")) {
      chain.link();
      SourcePos pos = advance().pos;
      left = make_expr(pos, BinaryExpr{BinaryOp::And, std::move(left), parse_not()});
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      SourcePos pos = advance().pos;
      return make_expr(pos, UnaryExpr{UnaryOp::Not, parse_not()});
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    SourcePos pos = current().pos;
    ExprPtr first = parse_math1();
    CompareExpr cmp;
    while (true) {
      CompareOp op;
      if (current().type == TokenType::Operator && (current().text == "==" || current().text == "!=" ||
                                                    current().text == "<" || current().text == "<=" ||
                                                    current().text == ">" || current().text == ">=")) {
        const std::string& t = current().text;
        op = t == "==" ? CompareOp::Eq : t == "!=" ? CompareOp::Ne : t == "<" ? CompareOp::Lt
           : t == "<=" ? CompareOp::Le : t == ">" ? CompareOp::Gt : CompareOp::Ge;
        advance();
      } else if (is_name("in")) {
        op = CompareOp::In;
        advance();
      } else if (is_name("not") && peek().type == TokenType::Name && peek().text == "in") {
        op = CompareOp::NotIn;
        advance();
        advance();
      } else {
        break;
      }
      cmp.rest.emplace_back(op, parse_math1());
    }
    if (cmp.rest.empty()) return first;
    cmp.first = std::move(first);
    return make_expr(pos, std::move(cmp));
  }

  ExprPtr parse_math1() {
    ChainGuard chain(*this);
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      chain.link();
      BinaryOp op = current().text == "+" ? BinaryOp::Add : BinaryOp::Sub;
      SourcePos pos = advance().pos;
      left = make_expr(pos, BinaryExpr{op, std::move(left), parse_concat()});
    }
    return left;
  }

  ExprPtr parse_concat() {
    ChainGuard chain(*this);
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      chain.link();
      SourcePos pos = advance().pos;
      left = make_expr(pos, BinaryExpr{BinaryOp::Concat, std::move(left), parse_math2()});
    }
    return left;
  }

  ExprPtr parse_math2() {
    ChainGuard chain(*this);
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      chain.link();
      const std::string& t = current().text;
      BinaryOp op = t == "*" ? BinaryOp::Mul : t == "/" ? BinaryOp::Div : t == "//" ? BinaryOp::FloorDiv : BinaryOp::Mod;
      SourcePos pos = advance().pos;
      left = make_expr(pos, BinaryExpr{op, std::move(left), parse_pow()});
    }
    return left;
  }

  ExprPtr parse_pow() {
    ChainGuard chain(*this);
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {  // left-associative in jinja2
      chain.link();
      SourcePos pos = advance().pos;
      left = make_expr(pos, BinaryExpr{BinaryOp::Pow, std::move(left), parse_unary(true)});
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    SourcePos pos = current().pos;
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      UnaryOp op = current().text == "-" ? UnaryOp::Neg : UnaryOp::Pos;
      advance();
      node = make_expr(pos, UnaryExpr{op, parse_unary(false)});
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    DepthGuard guard(*this);
    const Token& t = current();
    SourcePos pos = t.pos;
    switch (t.type) {
      case TokenType::Name: {
        std::string name = advance().text;
        if (name == "true" || name == "True") return make_expr(pos, LiteralExpr{Value(true)});
        if (name == "false" || name == "False") return make_expr(pos, LiteralExpr{Value(false)});
        if (name == "none" || name == "None") return make_expr(pos, LiteralExpr{Value(nullptr)});
        return make_expr(pos, NameExpr{std::move(name)});
      }
      case TokenType::String: {
        std::string text;
        while (current().type == TokenType::String) text += advance().text;  // "a" "b" is "ab"
        return make_expr(pos, LiteralExpr{Value(std::move(text))});
      }
      case TokenType::Integer: {
        const std::string& text = advance().text;
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(text.c_str(), &end, 0);
        if (errno == ERANGE) fail("integer literal too large", pos);
        return make_expr(pos, LiteralExpr{Value(static_cast<int64_t>(v))});
      }
      case TokenType::Float:
        return make_expr(pos, LiteralExpr{Value(std::strtod(advance().text.c_str(), nullptr))});
      case TokenType::Operator:
        if (t.text == "(") {
          advance();
          ExprPtr e = parse_tuple(true, true, {});
          expect_op(")");
          return e;
        }
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default:
        break;
    }
    fail_here("unexpected '" + describe(t) + "'");
  }

  ExprPtr parse_list() {
    SourcePos pos = advance().pos;
    ListExpr list;
    while (!is_op("]")) {
      if (!list.items.empty()) expect_op(",");
      if (is_op("]")) break;
      list.items.push_back(parse_expression(true));
    }
    expect_op("]");
    return make_expr(pos, std::move(list));
  }

  ExprPtr parse_dict() {
    SourcePos pos = advance().pos;
    DictExpr dict;
    while (!is_op("}")) {
      if (!dict.entries.empty()) expect_op(",");
      if (is_op("}")) break;
      ExprPtr key = parse_expression(true);
      expect_op(":");
      dict.entries.emplace_back(std::move(key), parse_expression(true));
    }
    expect_op("}");
    return make_expr(pos, std::move(dict));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    ChainGuard chain(*this);
    while (true) {
      chain.link();
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& t = advance();
    SourcePos pos = t.pos;
    if (t.text == ".") {
      const Token& attr = advance();
      if (attr.type == TokenType::Name) return make_expr(pos, GetAttrExpr{std::move(node), attr.text});
      if (attr.type != TokenType::Integer) fail("expected name or number", attr.pos);
      ExprPtr index = make_expr(attr.pos, LiteralExpr{Value(static_cast<int64_t>(std::strtoll(attr.text.c_str(), nullptr, 0)))});
      return make_expr(pos, GetItemExpr{std::move(node), std::move(index)});
    }
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    ExprPtr index;
    if (args.size() == 1) {
      index = std::move(args[0]);
    } else {
      index = make_expr(pos, ListExpr{std::move(args), true});
    }
    return make_expr(pos, GetItemExpr{std::move(node), std::move(index)});
  }

  ExprPtr parse_subscribed() {
    SourcePos pos = current().pos;
    SliceExpr slice;
    if (is_op(":")) {
      advance();
    } else {
      ExprPtr e = parse_expression(true);
      if (!is_op(":")) return e;
      advance();
      slice.start = std::move(e);
    }
    if (!is_op(":") && !is_op("]") && !is_op(",")) slice.stop = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) slice.step = parse_expression(true);
    }
    return make_expr(pos, std::move(slice));
  }

  Arguments parse_call_args() {
    SourcePos open = current().pos;
    expect_op("(");
    Arguments args;
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail("invalid syntax for function call expression", open);
    };
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (skip_op("*")) {
        ensure(!args.star_args && !args.star_kwargs);
        args.star_args = parse_expression(true);
      } else if (skip_op("**")) {
        ensure(!args.star_kwargs);
        args.star_kwargs = parse_expression(true);
      } else if (current().type == TokenType::Name && peek().type == TokenType::Operator && peek().text == "=") {
        ensure(!args.star_kwargs);
        std::string key = advance().text;
        advance();
        args.keyword.emplace_back(std::move(key), parse_expression(true));
      } else {
        ensure(!args.star_args && !args.star_kwargs && args.keyword.empty());
        args.positional.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
    return args;
  }

  ExprPtr parse_call(ExprPtr callee) {
    SourcePos pos = callee->pos;  // errors in a call point at what is called
    Arguments args = parse_call_args();
    return make_expr(pos, CallExpr{std::move(callee), std::move(args)});
  }

  std::string parse_dotted_name() {
    std::string name = expect_name();
    while (is_op(".")) {
      advance();
      name += '.';
      name += expect_name();
    }
    return name;
  }

  // `| name(args) | name ...` applied to node (null: the body of a filter block or block set).
  ExprPtr parse_filter_chain(ExprPtr node, bool start_inline = false) {
    ChainGuard chain(*this);
    while (is_op("|") || start_inline) {
      chain.link();
      if (!start_inline) advance();
      start_inline = false;
      SourcePos pos = current().pos;
      FilterExpr filter;
      filter.name = parse_dotted_name();
      if (is_op("(")) filter.args = parse_call_args();
      filter.input = std::move(node);
      node = make_expr(pos, std::move(filter));
    }
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    ChainGuard chain(*this);
    while (true) {
      chain.link();
      if (is_op("|")) {
        node = parse_filter_chain(std::move(node));
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_test(ExprPtr node) {
    SourcePos pos = advance().pos;  // 'is'
    TestExpr test;
    test.negated = skip_name("not");
    test.name = parse_dotted_name();
    const Token& t = current();
    bool starts_argument =
        t.type == TokenType::Name || t.type == TokenType::String || t.type == TokenType::Integer ||
        t.type == TokenType::Float || (t.type == TokenType::Operator && (t.text == "[" || t.text == "{"));
    if (is_op("(")) {
      test.args = parse_call_args();
    } else if (starts_argument && !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail_here("You cannot chain multiple tests with is");
      test.args.positional.push_back(parse_postfix(parse_primary()));
    }
    test.input = std::move(node);
    return make_expr(pos, std::move(test));
  }

  std::vector<Token> tokens_;
  size_t index_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

std::unique_ptr<Program> parse_program(std::string_view source) { return Parser(tokenize(source)).run(); }

}  // namespace kvtier::jinja
