// A GGUF file opened for a test: its header and any tensor's data bytes.
#ifndef MODELSMITH_TESTS_SUPPORT_GGUF_FILE_H_
#define MODELSMITH_TESTS_SUPPORT_GGUF_FILE_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "workers/formats/gguf.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith {

struct Gguf {
  std::unique_ptr<RandomAccessObject> object;
  GgufFile header;
  const GgufTensor* Find(const std::string& name) const {
    for (const GgufTensor& t : header.tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
  std::string Data(const GgufTensor& t) const {
    std::string bytes(t.size_bytes, '\0');
    EXPECT_TRUE(
        object->ReadAt(header.data_start + t.offset, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data())).ok());
    return bytes;
  }
};

// Opens `path`; a failure is a test failure (and an empty Gguf).
inline Gguf LoadGguf(const std::string& path) {
  LocalObjectStore store;
  Gguf g;
  auto object = store.OpenForRead(path);
  EXPECT_TRUE(object.ok()) << path << ": " << object.status();
  if (!object.ok()) return g;
  g.object = *std::move(object);
  auto header = ReadGgufHeader(*g.object);
  EXPECT_TRUE(header.ok()) << header.status();
  if (header.ok()) g.header = *std::move(header);
  return g;
}

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_GGUF_FILE_H_
