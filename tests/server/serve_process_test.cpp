// `kvtier serve` as a process: flags as llama-server spells them (-np), --port 0 printing the port it took, a
// request answered, and a clean exit (code 0) on SIGTERM and on SIGINT while a stream is running.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "common/test_util.h"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string kBinary = std::string(KVTIER_BINARY_DIR) + "/kvtier";
const std::string kModel = std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The server's process, its stderr in a file; killed (if still running) on destruction.
class ServeProcess {
 public:
  explicit ServeProcess(const fs::path& dir) : log_(dir / "serve.log") {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::FILE* err = std::freopen(log_.c_str(), "w", stderr);
      (void)err;
      ::execl(kBinary.c_str(), kBinary.c_str(), "serve", "-m", kModel.c_str(), "--port", "0", "-np", "2", "-c", "256",
              "-t", "2", "--alias", "tiny", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // The port from "… on http://127.0.0.1:PORT", waiting (bounded) for the model to load; -1 if it never came.
  int port() {
    const std::regex listening(R"(on http://127\.0\.0\.1:(\d+))");
    for (int i = 0; i < 1200; ++i) {
      std::smatch m;
      const std::string text = slurp(log_);
      if (std::regex_search(text, m, listening)) return std::stoi(m[1]);
      std::this_thread::sleep_for(50ms);
    }
    return -1;
  }
  // Sends `signal` and returns the exit status (-1: not a normal exit).
  int stop(int signal) {
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string log() const { return slurp(log_); }

 private:
  fs::path log_;
  pid_t pid_ = -1;
};

class ServeProcessTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel)) GTEST_SKIP() << "needs the demo model " << kModel;
    if (!fs::exists(kBinary)) GTEST_SKIP() << "needs the kvtier binary " << kBinary << " (build the kvtier target)";
  }
};

TEST_P(ServeProcessTest, AnswersAndExitsCleanlyOnASignalEvenMidStream) {
  kvtier::testing::TempDir dir("kvtier-serve");
  ServeProcess server(dir.path());
  const int port = server.port();
  ASSERT_GT(port, 0) << server.log();
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  const nlohmann::json body = {
      {"model", "tiny"}, {"prompt", "The Linux kernel"}, {"max_tokens", 8}, {"temperature", 0}};
  auto r = client.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(nlohmann::json::parse(r->body)["usage"]["completion_tokens"], 8);
  // A stream that would run to the end of the context, stopped by the signal.
  std::atomic<size_t> streamed{0};
  std::thread long_stream([&] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    nlohmann::json long_body = body;
    long_body["max_tokens"] = 240;
    long_body["stream"] = true;
    long_body["ignore_eos"] = true;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = long_body.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      streamed += n;
      return true;
    };
    c.send(req);
  });
  for (int i = 0; i < 600 && streamed == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(server.stop(GetParam()), 0) << server.log();
  long_stream.join();
  EXPECT_NE(server.log().find("kvtier serve: stopped"), std::string::npos) << server.log();
}

INSTANTIATE_TEST_SUITE_P(Signals, ServeProcessTest, ::testing::Values(SIGTERM, SIGINT),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == SIGTERM ? "SIGTERM" : "SIGINT");
                         });

}  // namespace
