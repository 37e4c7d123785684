// ExecuTorch plumbing: load a program from verified memory, own one method's memory, bind float inputs.
#include "et.h"

#include <executorch/runtime/platform/runtime.h>

#include <mutex>

namespace executorch::extension::threadpool {  // libexecutorch_threadpool.so; the wheel ships no header for it
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(unsigned int num_threads);
};
ThreadPool *get_threadpool();
}  // namespace executorch::extension::threadpool

namespace mr {
using namespace executorch::runtime;

namespace {
void init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    runtime_init();
    // one thread, as the Python runtime's measurements: the per-call work is microseconds, a pool only adds wakeups
    if (auto *pool = executorch::extension::threadpool::get_threadpool()) pool->_unsafe_reset_threadpool(1);
  });
}
}  // namespace

EtProgram::EtProgram(const Bytes &data, const std::string &w) : what(w) {
  init_once();
  loader_ = std::make_unique<executorch::extension::BufferDataLoader>(data.data(), data.size());
  auto p = Program::load(loader_.get(), Program::Verification::InternalConsistency);
  if (!p.ok()) throw BundleError(what + " program cannot be loaded (error " + std::to_string(int(p.error())) + ")");
  program_ = std::make_unique<Program>(std::move(*p));
}

bool EtProgram::has_method(const std::string &name) const {
  for (size_t i = 0; i < program_->num_methods(); i++) {
    auto n = program_->get_method_name(i);
    if (n.ok() && name == *n) return true;
  }
  return false;
}

EtMethod::EtMethod(EtProgram &p, const std::string &name) : name_(p.what + "." + name) {
  if (!p.has_method(name)) throw BundleError(p.what + " program has no method " + name);
  auto meta = p.program().method_meta(name.c_str());
  if (!meta.ok()) throw BundleError(name_ + ": no metadata");
  meta_ = std::make_unique<MethodMeta>(*meta);
  for (size_t i = 0; i < meta_->num_memory_planned_buffers(); i++) {
    auto n = meta_->memory_planned_buffer_size(i);
    if (!n.ok()) throw BundleError(name_ + ": bad memory plan");
    planned_.emplace_back(size_t(*n));
  }
  for (auto &b : planned_) spans_.emplace_back(b.data(), b.size());
  hier_ = std::make_unique<HierarchicalAllocator>(Span<Span<uint8_t>>(spans_.data(), spans_.size()));
  mm_ = std::make_unique<MemoryManager>(&method_alloc_, hier_.get(), &temp_alloc_);
  auto m = p.program().load_method(name.c_str(), mm_.get());
  if (!m.ok()) throw BundleError(name_ + " cannot be loaded (error " + std::to_string(int(m.error())) + ")");
  method_ = std::make_unique<Method>(std::move(*m));
  inputs_.resize(meta_->num_inputs());
}

std::vector<int32_t> EtMethod::input_sizes(size_t i) const {
  auto t = meta_->input_tensor_meta(i);
  if (!t.ok()) throw BundleError(name_ + ": input " + std::to_string(i) + " is not a tensor");
  return {t->sizes().begin(), t->sizes().end()};
}

std::vector<int32_t> EtMethod::output_sizes(size_t i) const {
  auto t = meta_->output_tensor_meta(i);
  if (!t.ok()) throw BundleError(name_ + ": output " + std::to_string(i) + " is not a tensor");
  return {t->sizes().begin(), t->sizes().end()};
}

bool EtMethod::input_is_float(size_t i) const {
  auto t = meta_->input_tensor_meta(i);
  return t.ok() && t->scalar_type() == executorch::aten::ScalarType::Float;
}

void EtMethod::bind(size_t i, float *data) {
  Holder &h = inputs_.at(i);
  if (!h.impl) {
    h.sizes = input_sizes(i);
    size_t dim = h.sizes.size();
    h.order.resize(dim), h.strides.resize(dim);
    int32_t stride = 1;
    for (size_t j = dim; j-- > 0;) h.order[j] = uint8_t(j), h.strides[j] = stride, stride *= h.sizes[j];
    h.impl = std::make_unique<executorch::aten::TensorImpl>(executorch::aten::ScalarType::Float, ssize_t(dim),
                                                            h.sizes.data(), data, h.order.data(), h.strides.data());
  } else {
    h.impl->set_data(data);
  }
}

void EtMethod::run() {
  for (size_t i = 0; i < inputs_.size(); i++) {
    if (!inputs_[i].impl) throw BundleError(name_ + ": input " + std::to_string(i) + " unbound");
    executorch::aten::Tensor t(inputs_[i].impl.get());
    executorch::runtime::Error e = method_->set_input(EValue(t), i);
    if (e != executorch::runtime::Error::Ok) throw BundleError(name_ + ": set_input failed (error " + std::to_string(int(e)) + ")");
  }
  executorch::runtime::Error e = method_->execute();
  temp_alloc_.reset();
  if (e != executorch::runtime::Error::Ok) throw BundleError(name_ + " failed (error " + std::to_string(int(e)) + ")");
}

const float *EtMethod::out_f(size_t i) const { return method_->get_output(i).toTensor().const_data_ptr<float>(); }
const int64_t *EtMethod::out_l(size_t i) const {
  return method_->get_output(i).toTensor().const_data_ptr<int64_t>();
}
}  // namespace mr
