// Stop strings (`--stop STR`, the server's `stop`): generated text passes through a filter that holds back
// whatever could still become a stop string, so that a stop string never reaches the output, not even in part,
// whichever tokens it is split across.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvtier {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);  // empty strings are ignored

  // Appends generated text; returns what can be shown now. Once a stop string is complete, stopped() is true,
  // the returned text ends right before it, and later calls return nothing.
  std::string push(std::string_view text);
  // The end of generation without a stop string: the text held back.
  std::string flush();

  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }  // the stop string found ("" if none)
  size_t held_bytes() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;  // text not yet shown: a suffix that is a prefix of some stop string
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace kvtier
