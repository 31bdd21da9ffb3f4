// A shared test model and its tokenizer, loaded from ../shared/models.
#pragma once

#include <memory>
#include <string>

#include "common/shared_data.h"
#include "kvtier/model.h"
#include "kvtier/tokenizer.h"

namespace kvtier::testing {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Loads ../shared/models/<file>; failures are reported as test failures and leave members null.
inline LoadedModel load_shared_model(const std::string& file) {
  LoadedModel l;
  auto model = Model::load(shared_path("models/" + file).string());
  EXPECT_TRUE(model.ok()) << model.error();
  if (!model.ok()) return l;
  l.model = std::move(*model);
  auto tok = Tokenizer::from_gguf(l.model->file());
  EXPECT_TRUE(tok.ok()) << tok.error();
  if (tok.ok()) l.tokenizer = std::move(*tok);
  return l;
}

}  // namespace kvtier::testing
