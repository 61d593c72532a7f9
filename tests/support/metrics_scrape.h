// Reading the real modelsmithd's /metrics over HTTP with libcurl, for integration tests.
#ifndef MODELSMITH_TESTS_SUPPORT_METRICS_SCRAPE_H_
#define MODELSMITH_TESTS_SUPPORT_METRICS_SCRAPE_H_

#include <curl/curl.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>

namespace modelsmith::testing {

inline std::string Scrape(int port) {
  std::string body;
  CURL* curl = curl_easy_init();
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/metrics";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* out) {
        static_cast<std::string*>(out)->append(p, size * n);
        return size * n;
      });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  EXPECT_EQ(curl_easy_perform(curl), CURLE_OK);
  curl_easy_cleanup(curl);
  return body;
}

// The value of the first sample whose line starts with `series` followed by a space.
inline double Sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  ADD_FAILURE() << "no sample " << series;
  return -1;
}

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_METRICS_SCRAPE_H_
