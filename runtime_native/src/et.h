// A thin owner of one ExecuTorch method over the core runtime API (Program / Method / MemoryManager): the wheel
// ships no compiled extension::Module, and owning the planned buffers ourselves keeps them to what the method needs.
#pragma once

#include <executorch/extension/data_loader/buffer_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>

#include <memory>
#include <string>
#include <vector>

#include "internal.h"

namespace mr {

class EtProgram {
 public:
  EtProgram(const Bytes &data, const std::string &what);  // `data` must outlive this (constants are read from it)
  executorch::runtime::Program &program() { return *program_; }
  bool has_method(const std::string &name) const;
  const std::string what;

 private:
  std::unique_ptr<executorch::extension::BufferDataLoader> loader_;
  std::unique_ptr<executorch::runtime::Program> program_;
};

class EtMethod {
 public:
  EtMethod(EtProgram &p, const std::string &name);
  size_t num_inputs() const { return meta_->num_inputs(); }
  size_t num_outputs() const { return meta_->num_outputs(); }
  std::vector<int32_t> input_sizes(size_t i) const;
  std::vector<int32_t> output_sizes(size_t i) const;
  bool input_is_float(size_t i) const;
  // Point input i at `data` (float32, the method's declared shape); the memory must stay valid while bound.
  void bind(size_t i, float *data);
  void run();  // sets every bound input (planned inputs are copied in, others aliased), then executes
  const float *out_f(size_t i) const;
  const int64_t *out_l(size_t i) const;

 private:
  struct Holder {
    std::vector<int32_t> sizes, strides;
    std::vector<uint8_t> order;
    std::unique_ptr<executorch::aten::TensorImpl> impl;
  };
  std::string name_;
  std::unique_ptr<executorch::runtime::MethodMeta> meta_;
  executorch::extension::MallocMemoryAllocator method_alloc_, temp_alloc_;
  std::vector<std::vector<uint8_t>> planned_;
  std::vector<executorch::runtime::Span<uint8_t>> spans_;
  std::unique_ptr<executorch::runtime::HierarchicalAllocator> hier_;
  std::unique_ptr<executorch::runtime::MemoryManager> mm_;
  std::unique_ptr<executorch::runtime::Method> method_;
  std::vector<Holder> inputs_;
};
}  // namespace mr
