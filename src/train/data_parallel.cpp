#include "train/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#ifdef TANDEM_HAVE_MPI
#include "dist/mpi_communicator.h"
#endif
#include "train/step.h"

namespace tandem {

void run_as_rank(const std::function<void()>& body) {
  const WorldInfo world = discover_world();
  if (world.size == 1) return body();
  try {
    body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: rank %d of %d: %s\n", world.rank, world.size, e.what());
    std::fflush(stderr);
#ifdef TANDEM_HAVE_MPI
    mpi_abort_job(1);
#endif
    throw;
  }
}

ReduceMode parse_reduce_mode(const std::string& s) {
  if (s == "fast") return ReduceMode::fast;
  if (s == "deterministic") return ReduceMode::deterministic;
  throw Error("--reduce: '" + s + "' is not a reduction mode (fast, deterministic)");
}

const char* reduce_mode_name(ReduceMode m) { return m == ReduceMode::fast ? "fast" : "deterministic"; }

ParamStore shard_params(const ParamStore& full, const Model& local_model, Backend& backend, int rank) {
  ParamStore out;
  out.specs = local_model.param_specs();
  check(out.specs.size() == full.specs.size(), "expert parallelism: parameter lists differ");
  for (size_t i = 0; i < out.specs.size(); ++i) {
    const Shape& want = out.specs[i].shape;
    const Tensor& t = full.tensors[i];
    if (want == t.shape) {
      out.tensors.push_back(Tensor::empty(backend, want, DType::f32));
      out.tensors.back().copy_from(t);
      continue;
    }
    const size_t bytes = static_cast<size_t>(numel(want)) * sizeof(float);
    check(t.nbytes() % bytes == 0 && want.size() == t.shape.size(), "expert parallelism: ", out.specs[i].name, " ",
          shape_str(t.shape), " does not split into ", shape_str(want));
    std::vector<float> host(static_cast<size_t>(numel(want)));
    backend.download(host.data(), t.storage->handle, t.offset + static_cast<size_t>(rank) * bytes, bytes);
    out.tensors.push_back(Tensor::from_host(backend, want, host));
  }
  return out;
}

std::vector<Tensor> gather_params(const std::vector<Tensor>& local, const std::vector<ParamSpec>& full_specs,
                                  Communicator& comm, Backend& backend) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < local.size(); ++i) {
    if (local[i].shape == full_specs[i].shape) {
      out.push_back(local[i]);
      continue;
    }
    const std::vector<float> mine = local[i].to_host();
    std::vector<float> all(static_cast<size_t>(numel(full_specs[i].shape)));
    check(all.size() == mine.size() * static_cast<size_t>(comm.size()), "expert parallelism: ", full_specs[i].name,
          " does not gather into ", shape_str(full_specs[i].shape));
    comm.all_gather(mine.data(), all.data(), mine.size() * sizeof(float));
    out.push_back(Tensor::from_host(backend, full_specs[i].shape, all));
  }
  return out;
}

DataParallel::DataParallel(Communicator& comm, const ParallelOptions& opts, const ParamStore& params, Backend& backend,
                           int64_t batch_size, std::vector<bool> rank_local)
    : comm_(comm), opts_(opts), backend_(backend), specs_(params.specs), rank_local_(std::move(rank_local)) {
  rank_local_.resize(specs_.size(), false);
  const bool any_local = std::find(rank_local_.begin(), rank_local_.end(), true) != rank_local_.end();
  check(!any_local || opts.zero == 0, "--zero 1 with --expert-parallel is not supported yet");
  const int64_t N = comm.size();
  check(opts.zero == 0 || opts.zero == 1, "--zero ", opts.zero, ": only ZeRO stage 1 (optimizer state) is implemented");
  pieces_ = opts.reduce == ReduceMode::deterministic && opts.dp_shards > 0 ? opts.dp_shards : N;
  check(pieces_ % N == 0, "--dp-shards ", pieces_, " is not a multiple of the world size ", N,
        ": every rank must compute the same number of shards");
  check(batch_size % pieces_ == 0, "batch_size ", batch_size, " cannot be split into ", pieces_,
        opts.reduce == ReduceMode::deterministic ? " equal shards (--dp-shards)" : " equal per-rank slices (one per rank)");
  rows_ = batch_size / pieces_;
  local_ = pieces_ / N;
  first_ = comm.rank() * local_;

  check(!any_local || local_ == 1, "--expert-parallel needs one batch shard per rank (--dp-shards = the world size)");
  for (size_t i = 0; i < specs_.size(); ++i) {
    const bool reduced = specs_[i].trainable && !rank_local_[i];
    offsets_.push_back(reduced ? total_ : -1);
    if (reduced) total_ += numel(specs_[i].shape);
  }
  if (opts.zero) {
    slice_ = (total_ + N - 1) / N;
    slice_begin_ = std::min(total_, slice_ * comm.rank());
    slice_len_ = std::min(total_, slice_begin_ + slice_) - slice_begin_;
    for (size_t i = 0; i < specs_.size(); ++i) {
      if (offsets_[i] < 0) continue;
      const int64_t lo = std::max(offsets_[i], slice_begin_);
      const int64_t hi = std::min(offsets_[i] + numel(specs_[i].shape), slice_begin_ + slice_len_);
      if (lo < hi) parts_.push_back({i, lo - offsets_[i], hi - lo, lo - slice_begin_});
    }
    m_ = Tensor::zeros(backend, {std::max<int64_t>(slice_, 1)}, DType::f32);
    v_ = Tensor::zeros(backend, {std::max<int64_t>(slice_, 1)}, DType::f32);
    if (opts.reduce == ReduceMode::fast) grad_slice_ = Tensor::zeros(backend, {std::max<int64_t>(slice_, 1)}, DType::f32);
  } else {
    full_m_ = params.zeros_like(backend);
    full_v_ = params.zeros_like(backend);
  }
}

Tensor DataParallel::view(const Tensor& t, int64_t begin, int64_t len) {
  check(t.is_contiguous() && t.dtype == DType::f32, "data parallel: needs contiguous f32 tensors");
  Tensor v = t;
  v.offset = t.offset + static_cast<size_t>(begin) * sizeof(float);
  v.shape = {len};
  v.strides = {1};
  return v;
}

void DataParallel::pack(const std::vector<const Tensor*>& ts, std::vector<float>& flat) const {
  flat.resize(static_cast<size_t>(opts_.zero ? slice_ * comm_.size() : total_));
  std::fill(flat.begin() + total_, flat.end(), 0.0f);  // ZeRO padding
  for (size_t i = 0; i < ts.size(); ++i) {
    if (offsets_[i] < 0) continue;
    const Tensor& t = *ts[i];
    t.backend().download(flat.data() + offsets_[i], t.storage->handle, t.offset, t.nbytes());
  }
}

void DataParallel::unpack(const std::vector<float>& flat, const std::vector<const Tensor*>& ts) const {
  for (size_t i = 0; i < ts.size(); ++i) {
    if (offsets_[i] < 0) continue;
    const Tensor& t = *ts[i];
    t.backend().upload(t.storage->handle, t.offset, flat.data() + offsets_[i], t.nbytes());
  }
}

double DataParallel::mean_loss(const std::vector<double>& local) const {
  std::vector<double> all(local.size() * static_cast<size_t>(comm_.size()));
  comm_.all_gather(local.data(), all.data(), local.size() * sizeof(double));
  double sum = 0;
  for (double l : all) sum += l;  // rank-major = piece-major: the order one process adds them in
  return sum / static_cast<double>(all.size());
}

void DataParallel::add_piece(const std::vector<const Tensor*>& grads) {
  if (terms_.size() <= staged_) terms_.emplace_back();
  std::vector<float>& t = terms_[staged_++];
  t.resize(static_cast<size_t>(total_));
  for (size_t i = 0; i < grads.size(); ++i) {
    if (offsets_[i] < 0) continue;
    const Tensor& g = *grads[i];
    g.backend().download(t.data() + offsets_[i], g.storage->handle, g.offset, g.nbytes());
  }
}

void DataParallel::plan_overlap(const std::vector<const Tensor*>& grads, const std::vector<size_t>& final_at) {
  check(opts_.reduce == ReduceMode::fast && !opts_.zero && local_ == 1, "data parallel: overlap needs fast mode without ZeRO");
  constexpr int64_t kBucketFloats = int64_t{1} << 20;
  std::vector<size_t> order;
  for (size_t i = 0; i < grads.size(); ++i)
    if (offsets_[i] >= 0) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return final_at[a] < final_at[b]; });
  buckets_.clear();
  int64_t filled = kBucketFloats;
  for (size_t i : order) {
    check(final_at[i] != static_cast<size_t>(-1), "data parallel: the gradient of ", specs_[i].name, " is not computed");
    if (filled >= kBucketFloats) {
      buckets_.emplace_back();
      filled = 0;
    }
    Bucket& b = buckets_.back();
    b.params.push_back(i);
    b.ready = std::max(b.ready, final_at[i]);
    filled += numel(specs_[i].shape);
  }
  overlap_grads_ = grads;
  next_bucket_ = buckets_.size();  // nothing in flight until the next backward pass
}

void DataParallel::after_step(size_t step) {
  if (step == 0) next_bucket_ = 0;  // a new run of the program
  for (; next_bucket_ < buckets_.size() && buckets_[next_bucket_].ready <= step; ++next_bucket_) {
    Bucket& b = buckets_[next_bucket_];
    size_t n = 0;
    for (size_t i : b.params) n += static_cast<size_t>(numel(specs_[i].shape));
    b.host.resize(n);
    size_t at = 0;
    for (size_t i : b.params) {
      const Tensor& g = *overlap_grads_[i];
      g.backend().download(b.host.data() + at, g.storage->handle, g.offset, g.nbytes());
      at += static_cast<size_t>(g.numel());
    }
    b.pending = comm_.start_all_reduce_sum(b.host.data(), n);
  }
  for (size_t k = 0; k < next_bucket_; ++k)  // MPI progresses non-blocking calls when asked
    if (buckets_[k].pending) buckets_[k].pending->test();
}

double DataParallel::reduce(const std::vector<const Tensor*>& grads, double inv_count) {
  const bool single = comm_.size() == 1;
  if (overlapping()) {
    check(next_bucket_ == buckets_.size() && grads == overlap_grads_, "data parallel: the overlapped reduction of ",
          "this step did not start every bucket on the planned gradients");
    for (Bucket& b : buckets_) {
      b.pending->wait();
      b.pending.reset();
      size_t at = 0;
      for (size_t i : b.params) {
        const Tensor& g = *grads[i];
        g.backend().upload(g.storage->handle, g.offset, b.host.data() + at, g.nbytes());
        at += static_cast<size_t>(g.numel());
      }
    }
  } else if (opts_.zero && opts_.reduce == ReduceMode::fast) {
    pack(grads, host_);
    std::vector<float> mine(static_cast<size_t>(slice_));
    comm_.reduce_scatter_sum(host_.data(), mine.data(), static_cast<size_t>(slice_));
    grad_slice_.copy_from_host(mine);
    double ss = 0;
    for (const Part& p : parts_) ss += backend_.sum_squares(view(grad_slice_, p.flat, p.len));
    return std::sqrt(comm_.all_reduce_sum(ss)) * inv_count;
  } else if (opts_.reduce == ReduceMode::deterministic) {
    if (staged_ == 0 && !single) add_piece(grads);
    if (staged_ > 0) {
      std::vector<float*> ptrs;
      for (size_t k = 0; k < staged_; ++k) ptrs.push_back(terms_[k].data());
      comm_.ordered_sum(ptrs.data(), ptrs.size(), static_cast<size_t>(total_));
      unpack(terms_[0], grads);
      staged_ = 0;
    }
  } else if (comm_.works_on_device()) {
    // NCCL: pack into one device buffer, reduce there, unpack; nothing visits the host. One rank
    // too (--comm nccl in one process: the sum is a copy), so a single GPU exercises the path.
    if (!device_flat_.defined()) device_flat_ = Tensor::empty(backend_, {std::max<int64_t>(total_, 1)}, DType::f32);
    for (size_t i = 0; i < grads.size(); ++i)
      if (offsets_[i] >= 0)
        backend_.copy(device_flat_.storage->handle, static_cast<size_t>(offsets_[i]) * sizeof(float),
                      grads[i]->storage->handle, grads[i]->offset, grads[i]->nbytes());
    backend_.sync();
    comm_.all_reduce_sum_device(static_cast<float*>(device_flat_.storage->handle), static_cast<size_t>(total_));
    for (size_t i = 0; i < grads.size(); ++i)
      if (offsets_[i] >= 0)
        backend_.copy(grads[i]->storage->handle, grads[i]->offset, device_flat_.storage->handle,
                      static_cast<size_t>(offsets_[i]) * sizeof(float), grads[i]->nbytes());
  } else if (!single) {
    pack(grads, host_);
    comm_.all_reduce_sum(host_.data(), static_cast<size_t>(total_));
    unpack(host_, grads);
  }
  if (std::find(rank_local_.begin(), rank_local_.end(), true) == rank_local_.end())
    return global_norm(backend_, grads) * inv_count;
  // Expert parallelism: replicas count once, every rank's own experts are added over ranks.
  double replicated = 0, own = 0;
  for (size_t i = 0; i < grads.size(); ++i) (rank_local_[i] ? own : replicated) += backend_.sum_squares(*grads[i]);
  return std::sqrt(replicated + comm_.all_reduce_sum(own)) * inv_count;
}

void DataParallel::step(ParamStore& params, const std::vector<const Tensor*>& grads, const TrainConfig& c, double lr,
                        int64_t step_number, float grad_scale) {
  auto adamw_step = [&](size_t i) {
    return AdamWStep{static_cast<float>(lr), static_cast<float>(c.beta1), static_cast<float>(c.beta2),
                     static_cast<float>(c.adam_eps), specs_[i].decay ? static_cast<float>(c.weight_decay) : 0.0f,
                     step_number, grad_scale};
  };
  if (!opts_.zero) {
    for (size_t i = 0; i < params.tensors.size(); ++i) {
      if (!specs_[i].trainable) continue;
      params.tensors[i].backend().adamw(params.tensors[i], *grads[i], full_m_[i], full_v_[i], adamw_step(i));
    }
    return;
  }
  // ZeRO-1: update this rank's slice, element for element the same arithmetic as the full update.
  for (const Part& p : parts_) {
    const Tensor g = opts_.reduce == ReduceMode::fast ? view(grad_slice_, p.flat, p.len) : view(*grads[p.param], p.begin, p.len);
    backend_.adamw(view(params.tensors[p.param], p.begin, p.len), g, view(m_, p.flat, p.len), view(v_, p.flat, p.len),
                   adamw_step(p.param));
  }
  std::vector<float> mine(static_cast<size_t>(slice_), 0.0f);
  for (const Part& p : parts_) {
    const Tensor& t = params.tensors[p.param];
    t.backend().download(mine.data() + p.flat, t.storage->handle, t.offset + static_cast<size_t>(p.begin) * sizeof(float),
                         static_cast<size_t>(p.len) * sizeof(float));
  }
  host_.resize(static_cast<size_t>(slice_ * comm_.size()));
  comm_.all_gather(mine.data(), host_.data(), static_cast<size_t>(slice_) * sizeof(float));
  std::vector<const Tensor*> ps;
  for (const Tensor& t : params.tensors) ps.push_back(&t);
  unpack(host_, ps);
}

void DataParallel::full_moments(std::vector<Tensor>& exp_avg, std::vector<Tensor>& exp_avg_sq) {
  if (!opts_.zero) {
    exp_avg = full_m_;
    exp_avg_sq = full_v_;
    return;
  }
  ParamStore shapes;
  shapes.specs = specs_;
  exp_avg = shapes.zeros_like(backend_);
  exp_avg_sq = shapes.zeros_like(backend_);
  for (auto [slice, full] : {std::pair{&m_, &exp_avg}, std::pair{&v_, &exp_avg_sq}}) {
    const std::vector<float> mine = slice->to_host();
    host_.resize(static_cast<size_t>(slice_ * comm_.size()));
    comm_.all_gather(mine.data(), host_.data(), static_cast<size_t>(slice_) * sizeof(float));
    std::vector<const Tensor*> ts;
    for (const Tensor& t : *full) ts.push_back(&t);
    unpack(host_, ts);
  }
}

void DataParallel::load_moments(const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq) {
  if (!opts_.zero) {
    for (size_t i = 0; i < full_m_.size(); ++i) {
      full_m_[i].copy_from(exp_avg[i]);
      full_v_[i].copy_from(exp_avg_sq[i]);
    }
    return;
  }
  for (auto [full, slice] : {std::pair{&exp_avg, &m_}, std::pair{&exp_avg_sq, &v_}}) {
    std::vector<const Tensor*> ts;
    for (const Tensor& t : *full) ts.push_back(&t);
    pack(ts, host_);
    slice->copy_from_host(std::span<const float>(host_.data() + slice_begin_, static_cast<size_t>(slice_)));
  }
}

void DataParallel::zero_moments() {
  if (!opts_.zero) {
    for (size_t i = 0; i < full_m_.size(); ++i) {
      full_m_[i].fill_zero();
      full_v_[i].fill_zero();
    }
    return;
  }
  m_.fill_zero();
  v_.fill_zero();
}

uint64_t DataParallel::state_bytes() const {
  if (opts_.zero) return 2 * static_cast<uint64_t>(slice_) * sizeof(float);
  uint64_t n = 0;
  for (const Tensor& t : full_m_) n += 2 * t.nbytes();
  return n;
}

}  // namespace tandem
