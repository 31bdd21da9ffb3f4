// `kvtier chat` end to end, through a pipe and through a pseudo-terminal (`script`), and `kvtier template`
// against the reference renders in ../shared/templates.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/shared_data.h"
#include "common/test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kBinary = std::string(KVTIER_BINARY_DIR) + "/kvtier";
std::string demo_model() { return std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf"; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Outcome {
  int code = -1;
  std::string out, err;
};

// `sh -c "<command> <in >out 2>err"` with a 120 s timeout.
Outcome shell(const std::string& command, const fs::path& dir, const std::string& input = "") {
  std::ofstream(dir / "in.txt", std::ios::binary) << input;
  const std::string cmd = "timeout 120 " + command + " <" + (dir / "in.txt").string() + " >" +
                          (dir / "out.txt").string() + " 2>" + (dir / "err.txt").string();
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir / "out.txt"), slurp(dir / "err.txt")};
}

std::vector<int> numbers_after(const std::string& text, const std::string& marker) {
  std::vector<int> found;
  for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
    found.push_back(std::atoi(text.c_str() + at + marker.size()));
  }
  return found;
}

std::string twenty_messages() {
  std::string input;
  for (int i = 0; i < 20; ++i) input += "Tell me about the kernel, part " + std::to_string(i) + ".\n";
  return input;
}

TEST(ChatCli, TwentyTurnsThroughAPipeEvaluateOnlyNewTokens) {
  kvtier::testing::TempDir dir("kvtier-chat");
  Outcome o = shell(kBinary + " chat -m " + demo_model() + " -n 12 --temp 0 -t 2 -c 2048 -v", dir.path(),
                    twenty_messages());
  ASSERT_EQ(o.code, 0) << o.err;
  // An answer per message; stdout holds only answers (each ends in a newline; -v details go to stderr).
  EXPECT_EQ(numbers_after(o.err, "[generated ").size(), 20u) << o.err;
  EXPECT_EQ(o.out.find("kvtier"), std::string::npos);
  EXPECT_EQ(o.out.find("[reused"), std::string::npos);
  const std::vector<int> reused = numbers_after(o.err, "[reused ");
  const std::vector<int> evaluated = numbers_after(o.err, "tokens, evaluated ");
  ASSERT_EQ(reused.size(), 20u) << o.err;
  ASSERT_EQ(evaluated.size(), 20u);
  EXPECT_EQ(reused[0], 0);
  for (int turn = 1; turn < 20; ++turn) {
    EXPECT_GT(reused[turn], reused[turn - 1]) << "turn " << turn << " reuses the conversation so far";
    // The first turn evaluated BOS, the first message and its template markers; later ones about as much.
    EXPECT_LE(evaluated[turn], evaluated[0] + 10) << "turn " << turn << " evaluates about its own message only";
  }
  // Greedy: the same conversation gives the same answers.
  Outcome again = shell(kBinary + " chat -m " + demo_model() + " -n 12 --temp 0 -t 1 -c 2048", dir.path(),
                        twenty_messages());
  EXPECT_EQ(again.out, o.out);
  EXPECT_TRUE(again.err.empty()) << "nothing on stderr without -v: " << again.err;
}

TEST(ChatCli, APseudoTerminalGetsPromptsAndSlashCommands) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs script(1) (bsdutils)";
  kvtier::testing::TempDir dir("kvtier-chat");
  const std::string chat = kBinary + " chat -m " + demo_model() + " -n 8 --temp 0 -t 1 --system 'Be brief.'";
  const std::string input = "Hello there\n/stats\nline one \\\nline two\n/save " + dir.path() + "/c.kvs\n/help\n/exit\n";
  Outcome o = shell("script -qfec \"" + chat + "\" /dev/null", dir.path(), input);
  ASSERT_EQ(o.code, 0) << o.out << o.err;
  // Under a terminal everything shares the pty: the banner, the prompts, the answers and /stats output.
  EXPECT_NE(o.out.find("kvtier chat:"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("> "), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("positions in use; last turn reused"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("/clear"), std::string::npos) << "/help" << o.out;
  EXPECT_TRUE(fs::exists(dir.path() + "/c.kvs")) << o.out;
  EXPECT_TRUE(fs::exists(dir.path() + "/c.kvs.json")) << o.out;
  auto messages = nlohmann::json::parse(slurp(dir.path() + "/c.kvs.json"));
  ASSERT_EQ(messages.size(), 5u) << messages.dump();  // system, two user messages, two answers
  EXPECT_EQ(messages[3]["content"], "line one \nline two") << "a continued line is one message";
}

TEST(ChatCli, TwentyTurnsThroughAPseudoTerminalEvaluateOnlyNewTokens) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs script(1) (bsdutils)";
  kvtier::testing::TempDir dir("kvtier-chat");
  const std::string chat = kBinary + " chat -m " + demo_model() + " -n 12 --temp 0 -t 2 -c 2048 -v";
  // /exit ends the session: an end of file that script(1) passes on while the chat is busy can be lost.
  Outcome o = shell("script -qfec \"" + chat + "\" /dev/null", dir.path(), twenty_messages() + "/exit\n");
  ASSERT_EQ(o.code, 0) << o.out << o.err;
  const std::vector<int> reused = numbers_after(o.out, "[reused ");
  const std::vector<int> evaluated = numbers_after(o.out, "tokens, evaluated ");
  ASSERT_EQ(reused.size(), 20u) << o.out;
  ASSERT_EQ(evaluated.size(), 20u);
  for (int turn = 1; turn < 20; ++turn) {
    EXPECT_GT(reused[turn], reused[turn - 1]) << "turn " << turn;
    EXPECT_LE(evaluated[turn], evaluated[0] + 10) << "turn " << turn;
  }
}

TEST(ChatCli, SaveAndLoadContinueTheConversation) {
  kvtier::testing::TempDir dir("kvtier-chat");
  const std::string session = dir.path() + "/talk.kvs";
  const std::string chat = kBinary + " chat -m " + demo_model() + " -n 10 --temp 0 -t 1 -v";
  Outcome first = shell(chat, dir.path(), "First question\n/save " + session + "\n");
  ASSERT_EQ(first.code, 0) << first.err;
  Outcome resumed = shell(chat, dir.path(), "/load " + session + "\nSecond question\n");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  Outcome straight = shell(chat, dir.path(), "First question\nSecond question\n");
  ASSERT_EQ(straight.code, 0) << straight.err;
  // The second answer after /load is the uninterrupted conversation's, and it reused the loaded cache.
  const std::string second = straight.out.substr(straight.out.find('\n') + 1);
  EXPECT_EQ(resumed.out, second);
  const std::vector<int> reused = numbers_after(resumed.err, "[reused ");
  ASSERT_EQ(reused.size(), 1u) << resumed.err;
  EXPECT_GT(reused[0], 10);
  Outcome missing = shell(chat, dir.path(), "/load " + dir.path() + "/none.kvs\nHi\n");
  EXPECT_EQ(missing.code, 0) << missing.err;
  EXPECT_NE(missing.err.find("none.kvs.json"), std::string::npos) << missing.err;
}

TEST(ChatCli, AConversationFourTimesTheContextRunsToTheEnd) {
  kvtier::testing::TempDir dir("kvtier-chat");
  std::string input;
  for (int i = 0; i < 24; ++i) input += "Now continue the story about the Linux kernel and its schedulers, please.\n";
  Outcome o = shell(kBinary + " chat -m " + demo_model() + " -n 40 --temp 0 -t 2 -c 256 -v --system 'You tell stories.'",
                    dir.path(), input);
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(numbers_after(o.err, "[generated ").size(), 24u) << "every message was answered";
  int total = 0;
  for (int n : numbers_after(o.err, "[generated ")) total += n;
  for (int n : numbers_after(o.err, "tokens, evaluated ")) total += n;
  EXPECT_GT(total, 4 * 256) << "the conversation is at least four contexts long";
  EXPECT_NE(o.err.find("[context: dropped the oldest turn]"), std::string::npos) << o.err;
  // Whatever was dropped, the system prompt stays: every turn reuses at least its tokens.
  for (int n : numbers_after(o.err, "[reused ")) EXPECT_TRUE(n == 0 || n >= 5) << n;
}

TEST(ChatCli, StopStringsSplitAcrossTokensNeverLeak) {
  kvtier::testing::TempDir dir("kvtier-chat");
  const std::string run = kBinary + " run -m " + demo_model() + " -p 'The Linux kernel' -n 48 --temp 0 -t 1";
  Outcome plain = shell(run, dir.path());
  ASSERT_EQ(plain.code, 0) << plain.err;
  ASSERT_GT(plain.out.size(), 60u);
  // A stop string from the middle of the text, cut so that it starts and ends inside tokens.
  const std::string stop = plain.out.substr(31, 7);
  Outcome stopped = shell(run + " --stop '" + stop + "'", dir.path());
  ASSERT_EQ(stopped.code, 0) << stopped.err;
  const size_t first = plain.out.find(stop);
  EXPECT_EQ(stopped.out, plain.out.substr(0, first) + "\n");
  Outcome never = shell(run + " --stop 'zzzz-not-in-the-text'", dir.path());
  EXPECT_EQ(never.out, plain.out);
}

TEST(ChatCli, CtrlCStopsTheAnswerNotTheProgram) {
  kvtier::testing::TempDir dir("kvtier-chat");
  const fs::path fifo = dir.path() + "/in.fifo", out = dir.path() + "/out.txt", err = dir.path() + "/err.txt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string cmd = "exec " + kBinary + " chat -m " + demo_model() + " -n 100000 -c 4096 --temp 0 -t 1 <" +
                            fifo.string() + " >" + out.string() + " 2>" + err.string();
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  std::ofstream input(fifo);
  input << "Tell me everything.\n" << std::flush;
  for (int i = 0; i < 4000 && (!fs::exists(out) || fs::file_size(out) < 20); ++i) std::this_thread::sleep_for(5ms);
  ::kill(pid, SIGINT);
  for (int i = 0; i < 4000 && slurp(err).find("[stopped]") == std::string::npos; ++i) std::this_thread::sleep_for(5ms);
  input << "/stats\n" << std::flush;
  input.close();
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal: " << slurp(err);
  EXPECT_EQ(WEXITSTATUS(status), 0) << slurp(err);
  EXPECT_NE(slurp(err).find("[stopped]"), std::string::npos);
  EXPECT_NE(slurp(err).find("positions in use"), std::string::npos) << "the program went on: " << slurp(err);
}

// `kvtier template` reproduces the reference engine byte for byte, and fails its error cases: one rendered and
// one refused case per fixture template (the template library's own test runs every case in one process).
TEST(TemplateCli, RendersEveryReferenceFixture) {
  KVTIER_REQUIRE_SHARED("templates");
  kvtier::testing::TempDir dir("kvtier-template");
  int rendered = 0, refused = 0;
  for (const auto& entry : fs::directory_iterator(kvtier::testing::shared_path("templates"))) {
    if (entry.path().extension() != ".json") continue;
    const auto fixture = nlohmann::ordered_json::parse(slurp(entry.path()));
    std::ofstream(dir.path() + "/t.jinja", std::ios::binary) << fixture["source"].get<std::string>();
    bool rendered_one = false, refused_one = false;
    for (const auto& c : fixture["cases"]) {
      if (c.contains("expected") ? rendered_one : refused_one) continue;
      (c.contains("expected") ? rendered_one : refused_one) = true;
      SCOPED_TRACE(entry.path().filename().string() + " " + c["conversation"].get<std::string>());
      std::ofstream(dir.path() + "/ctx.json", std::ios::binary) << c["context"].dump();
      // The reference pins strftime_now's clock: so does --now.
      Outcome o = shell(kBinary + " template --now " + fixture["fixed_now"].get<std::string>() +
                            " --chat-template-file " + dir.path() + "/t.jinja --context " + dir.path() + "/ctx.json",
                        dir.path());
      if (c.contains("expected")) {
        ASSERT_EQ(o.code, 0) << o.err;
        EXPECT_EQ(o.out, c["expected"].get<std::string>());
        ++rendered;
      } else {
        EXPECT_EQ(o.code, 1);
        EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
        EXPECT_EQ(o.err.rfind("kvtier: error: chat template", 0), 0u) << o.err;
        EXPECT_TRUE(o.out.empty());
        ++refused;
      }
    }
  }
  EXPECT_GE(rendered, 51);  // one template refuses every conversation
  EXPECT_GT(refused, 0);
}

TEST(TemplateCli, BadInputIsOneErrorLine) {
  kvtier::testing::TempDir dir("kvtier-template");
  std::ofstream(dir.path() + "/bad.jinja") << "{% for x in %}";
  std::ofstream(dir.path() + "/m.json") << R"([{"role": "user", "content": "hi"}])";
  std::ofstream(dir.path() + "/notjson.json") << "{nope";
  const std::string t = kBinary + " template ";
  for (const std::string& args : {t + "--chat-template-file " + dir.path() + "/bad.jinja --messages " + dir.path() + "/m.json",
                                  t + "--chat-template chatml --messages " + dir.path() + "/notjson.json",
                                  t + "--chat-template nosuchname --messages " + dir.path() + "/m.json",
                                  t + "--chat-template chatml"}) {
    Outcome o = shell(args, dir.path());
    EXPECT_NE(o.code, 0) << args;
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << args << ": " << o.err;
    EXPECT_TRUE(o.out.empty()) << args;
  }
  Outcome ok = shell(t + "-m " + demo_model() + " --messages " + dir.path() + "/m.json", dir.path());
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(ok.out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
