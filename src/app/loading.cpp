#include <CLI/CLI.hpp>

#include "app/loading.h"
#include "app/progress.h"

namespace kvtier::app {

Result<LoadedModel> load_model_and_tokenizer(const std::string& path) {
  LoadedModel loaded;
  {
    ProgressBar bar("loading " + path);
    auto model = Model::load(path, [&](uint64_t done, uint64_t total) { bar.update(done, total); });
    if (!model.ok()) return Status::error(model.error());
    loaded.model = std::move(*model);
  }
  auto tokenizer = Tokenizer::from_gguf(loaded.model->file());
  if (!tokenizer.ok()) return Status::error(path + ": " + tokenizer.error());
  loaded.tokenizer = std::move(*tokenizer);
  loaded.model->file().release_metadata_pages();  // model and tokenizer hold what they need from it now
  return loaded;
}

}  // namespace kvtier::app
