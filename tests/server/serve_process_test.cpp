// `kvtier serve` as a process: flags as llama-server spells them (-np), --port 0 printing the port it took, a
// request answered, a clean exit (code 0) on SIGTERM and on SIGINT while a stream is running, and many clients
// connecting at once.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "server/serve_process.h"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

using ::kvtier::testing::kvtier_binary;
using ::kvtier::testing::ServeProcess;

const std::string kModel = std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf";

class ServeProcessTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel)) GTEST_SKIP() << "needs the demo model " << kModel;
    if (!fs::exists(kvtier_binary())) GTEST_SKIP() << "needs the kvtier binary " << kvtier_binary() << " (build the kvtier target)";
  }
};

TEST_P(ServeProcessTest, AnswersAndExitsCleanlyOnASignalEvenMidStream) {
  kvtier::testing::TempDir dir("kvtier-serve");
  ServeProcess server(dir.path(),
                      {"-m", kModel, "--port", "0", "-np", "2", "-c", "256", "-t", "2", "--alias", "tiny"});
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

// More clients connecting at once than cpp-httplib's backlog of 5: with the server stopped (SIGSTOP: nothing is
// accepted), every handshake still completes into the accept queue, and each connection is answered once the
// server runs again. (With the backlog at 5, the kernel dropped the handshakes past the sixth.)
TEST(ServeProcessBacklogTest, ManyClientsConnectingAtOnceAreAllQueued) {
  if (!fs::exists(kModel)) GTEST_SKIP() << "needs the demo model " << kModel;
  if (!fs::exists(kvtier_binary())) GTEST_SKIP() << "needs the kvtier binary " << kvtier_binary();
  kvtier::testing::TempDir dir("kvtier-serve");
  ServeProcess server(dir.path(), {"-m", kModel, "--port", "0", "-np", "2", "-c", "256", "-t", "2", "--max-queue", "40"});
  const int port = server.port();
  ASSERT_GT(port, 0) << server.log();
  constexpr int kClients = 32;
  ASSERT_EQ(::kill(server.pid(), SIGSTOP), 0);
  std::vector<int> sockets;
  for (int i = 0; i < kClients; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    sockets.push_back(fd);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(port));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    ASSERT_TRUE(r == 0 || errno == EINPROGRESS) << std::strerror(errno);
  }
  // A loopback handshake completes at once; a dropped one would wait for the SYN's retransmission (1 s and on),
  // dropped again while the server stays stopped. The 3 s bound only keeps a failure from hanging.
  std::vector<pollfd> waiting;  // [connections not yet established]
  for (int fd : sockets) waiting.push_back({fd, POLLOUT, 0});
  int connected = 0;
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (!waiting.empty() && std::chrono::steady_clock::now() < deadline) {
    if (::poll(waiting.data(), waiting.size(), 100) <= 0) continue;
    std::erase_if(waiting, [&](const pollfd& p) {
      if (p.revents == 0) return false;
      int error = -1;
      socklen_t size = sizeof error;
      connected += ::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0 ? 1 : 0;
      return true;
    });
  }
  ASSERT_EQ(::kill(server.pid(), SIGCONT), 0);
  EXPECT_EQ(connected, kClients);
  // Each queued connection is served.
  const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  int answered = 0;
  for (int fd : sockets) {
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    timeval timeout{60, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) continue;
    char buf[256];
    const ssize_t n = ::recv(fd, buf, sizeof buf - 1, 0);
    if (n > 0 && std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 200", 0) == 0) ++answered;
  }
  for (int fd : sockets) ::close(fd);
  EXPECT_EQ(answered, connected);
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.log();
}

INSTANTIATE_TEST_SUITE_P(Signals, ServeProcessTest, ::testing::Values(SIGTERM, SIGINT),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == SIGTERM ? "SIGTERM" : "SIGINT");
                         });

}  // namespace
