// The chat API (kvtier/chat.h) on the demo model's tokenizer: the ChatML fallback, built-ins, BOS handling,
// content parts, turn-end strings.
#include <gtest/gtest.h>

#include <string>

#include "kvtier/chat.h"
#include "kvtier/gguf.h"
#include "kvtier/tokenizer.h"

namespace {

struct Demo {
  std::unique_ptr<kvtier::gguf::File> file;
  std::unique_ptr<kvtier::Tokenizer> tokenizer;
  Demo() {
    auto f = kvtier::gguf::File::open(std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf");
    EXPECT_TRUE(f.ok());
    file = std::move(*f);
    auto t = kvtier::Tokenizer::from_gguf(*file);
    EXPECT_TRUE(t.ok());
    tokenizer = std::move(*t);
  }
};

const nlohmann::ordered_json kConversation = nlohmann::ordered_json::parse(R"([
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi"},
  {"role": "assistant", "content": "Hello."},
  {"role": "user", "content": [{"type": "text", "text": "Two"}, {"type": "text", "text": "parts"}]}
])");

TEST(Chat, ModelWithoutATemplateFallsBackToChatMl) {
  Demo demo;
  auto f = kvtier::ChatFormatter::from_model(*demo.file, *demo.tokenizer);
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_NE(f->origin().find("chatml"), std::string::npos);
  auto text = f->render(kConversation, true);
  ASSERT_TRUE(text.ok()) << text.error();
  EXPECT_EQ(*text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello."
            "<|im_end|>\n<|im_start|>user\nTwo\nparts<|im_end|>\n<|im_start|>assistant\n");
  // The vocabulary has no <|im_end|> token: the text ends a turn as a stop string.
  EXPECT_EQ(f->turn_end_strings(), std::vector<std::string>{"<|im_end|>"});
  auto named = kvtier::ChatFormatter::from_model(*demo.file, *demo.tokenizer, "tool_use");
  ASSERT_FALSE(named.ok());
  EXPECT_NE(named.error().find("tokenizer.chat_template.tool_use"), std::string::npos);
}

TEST(Chat, ATemplateThatWritesBosGetsNoSecondOne) {
  Demo demo;
  ASSERT_TRUE(demo.tokenizer->add_bos_default());
  const int32_t bos = demo.tokenizer->bos_id();
  auto llama3 = kvtier::ChatFormatter::from_source(*kvtier::builtin_chat_template("llama3"), "llama3",
                                                   demo.tokenizer.get());
  ASSERT_TRUE(llama3.ok()) << llama3.error();
  auto text = llama3->render(kConversation, true);
  ASSERT_TRUE(text.ok()) << text.error();
  EXPECT_EQ(text->rfind("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>", 0), 0u)
      << *text;
  std::vector<int32_t> tokens = llama3->tokenize(*text);
  ASSERT_GE(tokens.size(), 2u);
  EXPECT_EQ(tokens[0], bos);
  EXPECT_NE(tokens[1], bos) << "BOS twice";
  // ChatML writes no BOS: the tokenizer adds it, once.
  auto chatml = kvtier::ChatFormatter::from_model(*demo.file, *demo.tokenizer);
  tokens = chatml->tokenize(*chatml->render(kConversation, true));
  EXPECT_EQ(tokens[0], bos);
  EXPECT_NE(tokens[1], bos);
}

TEST(Chat, EveryBuiltinRendersAndBadInputIsAnError) {
  Demo demo;
  for (const std::string& name : kvtier::builtin_chat_template_names()) {
    auto f = kvtier::ChatFormatter::from_source(*kvtier::builtin_chat_template(name), name, demo.tokenizer.get());
    ASSERT_TRUE(f.ok()) << name << ": " << f.error();
    auto text = f->render(kConversation, true);
    ASSERT_TRUE(text.ok()) << name << ": " << text.error();
    EXPECT_NE(text->find("Two\nparts"), std::string::npos) << name << ": " << *text;
    // Each marks a turn's end with text (llama2 with eos_token, which is a token of every vocabulary).
    EXPECT_EQ(f->turn_end_strings().empty(), name == "llama2") << name;
  }
  EXPECT_FALSE(kvtier::builtin_chat_template("nope").ok());
  auto f = kvtier::ChatFormatter::from_model(*demo.file, *demo.tokenizer);
  EXPECT_FALSE(f->render(nlohmann::ordered_json::parse(R"({"role": "user"})"), true).ok());
  EXPECT_FALSE(f->render(nlohmann::ordered_json::parse(R"([{"content": "no role"}])"), true).ok());
  auto image = f->render(nlohmann::ordered_json::parse(R"([{"role": "user", "content": [{"type": "image_url"}]}])"), true);
  ASSERT_FALSE(image.ok());
  EXPECT_NE(image.error().find("only parts of type \"text\""), std::string::npos);
  auto broken = kvtier::ChatFormatter::from_source("{% if %}", "broken.jinja", demo.tokenizer.get());
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().find("broken.jinja"), std::string::npos) << broken.error();
}

}  // namespace
