// The parsed template: expressions and statements as plain structs in variants; the interpreter walks
// them directly (no code generation).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "template/error.h"
#include "template/value.h"

namespace kvtier::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// Arguments of a call, a filter or a test: f(a, b, key=c, *rest, **more).
struct Arguments {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  ExprPtr star_args;    // *expr, or null
  ExprPtr star_kwargs;  // **expr, or null
};

struct LiteralExpr { Value value; };
struct ListExpr { std::vector<ExprPtr> items; bool is_tuple = false; };
struct DictExpr { std::vector<std::pair<ExprPtr, ExprPtr>> entries; };
struct NameExpr { std::string name; };
struct GetAttrExpr { ExprPtr object; std::string attribute; };
struct GetItemExpr { ExprPtr object; ExprPtr index; };
struct SliceExpr { ExprPtr start, stop, step; };  // only as a GetItemExpr index; each bound may be null
struct CallExpr { ExprPtr callee; Arguments args; };
struct FilterExpr { ExprPtr input; std::string name; Arguments args; };  // input null: a filter block's body
struct TestExpr { ExprPtr input; std::string name; Arguments args; bool negated = false; };
enum class UnaryOp { Neg, Pos, Not };
struct UnaryExpr { UnaryOp op; ExprPtr operand; };
enum class BinaryOp { Add, Sub, Mul, Div, FloorDiv, Mod, Pow, Concat, And, Or };
struct BinaryExpr { BinaryOp op; ExprPtr left, right; };
enum class CompareOp { Eq, Ne, Lt, Le, Gt, Ge, In, NotIn };
struct CompareExpr { ExprPtr first; std::vector<std::pair<CompareOp, ExprPtr>> rest; };  // a < b <= c
struct CondExpr { ExprPtr condition, then_value, else_value; };  // else_value may be null

struct Expr {
  SourcePos pos;
  std::variant<LiteralExpr, ListExpr, DictExpr, NameExpr, GetAttrExpr, GetItemExpr, SliceExpr, CallExpr, FilterExpr,
               TestExpr, UnaryExpr, BinaryExpr, CompareExpr, CondExpr>
      node;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// The left side of `set` or `for`: a name, a tuple of names, or `namespace.attribute`.
struct AssignTarget {
  std::vector<std::string> names;  // one name, or the names of a tuple
  bool is_tuple = false;
  std::string attribute;           // non-empty: names[0].attribute (namespace assignment)
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: none given
};

struct TextStmt { std::string text; };
struct OutputStmt { ExprPtr expr; };
struct IfStmt { std::vector<std::pair<ExprPtr, Body>> branches; Body else_body; };
struct ForStmt { AssignTarget target; ExprPtr iterable; ExprPtr condition; Body body; Body else_body; };
struct SetStmt { AssignTarget target; ExprPtr value; };
struct SetBlockStmt { AssignTarget target; ExprPtr filter; Body body; };  // filter: a FilterExpr chain over the body, or null
struct MacroStmt { std::string name; std::vector<MacroParam> params; Body body; };
struct CallBlockStmt { std::vector<MacroParam> caller_params; ExprPtr call; Body body; };
struct FilterBlockStmt { ExprPtr filter; Body body; };  // filter: a FilterExpr chain whose innermost input is null
struct ScopedBlockStmt { std::vector<std::pair<AssignTarget, ExprPtr>> assignments; Body body; bool new_scope; };  // with / generation
struct BreakStmt {};
struct ContinueStmt {};

struct Stmt {
  SourcePos pos;
  std::variant<TextStmt, OutputStmt, IfStmt, ForStmt, SetStmt, SetBlockStmt, MacroStmt, CallBlockStmt, FilterBlockStmt,
               ScopedBlockStmt, BreakStmt, ContinueStmt>
      node;
};

struct Program {
  Body body;
};

}  // namespace kvtier::jinja
