// `kvtier serve` started as a child process by a test: its stderr in a file, the port it printed (--port 0),
// its memory as /proc reports it, and a signal to stop it. Killed (if still running) on destruction.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace kvtier::testing {

inline const std::string& kvtier_binary() {
  static const std::string path = std::string(KVTIER_BINARY_DIR) + "/kvtier";
  return path;
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class ServeProcess {
 public:
  // Runs `kvtier serve <args...>`; the args should include --port 0 so that parallel tests never collide.
  ServeProcess(const std::filesystem::path& dir, const std::vector<std::string>& args) : log_(dir / "serve.log") {
    std::vector<std::string> argv_strings = {kvtier_binary(), "serve"};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;  // [args + 3] pointers into argv_strings, null-terminated, made before fork()
    for (std::string& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      std::FILE* err = std::freopen(log_.c_str(), "w", stderr);
      (void)err;
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // The port from "… on http://127.0.0.1:PORT", waiting (bounded: a minute) for the model to load; -1 if it
  // never came (the process exited, or the log says why).
  int port() {
    using namespace std::chrono_literals;
    const std::regex listening(R"(on http://127\.0\.0\.1:(\d+))");
    for (int i = 0; i < 1200; ++i) {
      std::smatch m;
      const std::string text = slurp(log_);
      if (std::regex_search(text, m, listening)) return std::stoi(m[1]);
      if (pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return -1;
      }
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
  pid_t pid() const { return pid_; }

  // A "VmRSS:"-style field of /proc/<pid>/status in bytes (the kernel writes kB); -1 when unreadable.
  int64_t status_bytes(const std::string& field) const {
    const std::string text = slurp("/proc/" + std::to_string(pid_) + "/status");
    const std::regex line(field + R"(:\s+(\d+) kB)");
    std::smatch m;
    if (!std::regex_search(text, m, line)) return -1;
    return std::stoll(m[1]) * 1024;
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
};

}  // namespace kvtier::testing
