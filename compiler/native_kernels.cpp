// Native CPU kernels for robustspec (built by compiler/native.py), each with torch's own values
// and gradients bit for bit, in one call where torch dispatches many small ops:
//
// norm_inf: max |v| over the trailing dimensions, v given as it is or as a difference a - b
//   (norm_inf(x - x0), norm_inf(f(x) - f(x0))); amax's gradient (g / count at each tie), abs's
//   (times sgn(v)), sub's (the gradient and its negation). One read forward, one read and one
//   write backward, against torch's 8 full-size passes and ~20 ops.
// relu_sub, abs_sub: DL2's atoms, relu(a - b) (+ xi * [a == b] for a strict one) and |a - b|,
//   elementwise (a constant operand 0-dim); 1 op and 1 backward node against 2-6 ops and 2-3.
// score_rest: argmax(v) == c's margin form, v[c] and the largest other v[j], in one op and one
//   backward node against 5 ops and 4 nodes (amax's backward alone is 5 ops).
// prod_last: the product over the last axis (DL2's `exists` over a finite quantifier, e.g.
//   `forall j in classes` searched), for axes shorter than 16, where torch multiplies in order
//   (its vectorised reduction starts at 16 doubles or 32 floats);
//   torch's backward: g * (prod / v) when no factor in the whole tensor is 0, else the
//   zero-safe g * (product of the factors before * product of those after). 2 ops against 16.
// better_: the PGD search's best-point bookkeeping (compiler/search.py _Best): which examples
//   improved (a lower objective; a NaN best replaced by any number; equal objectives broken
//   towards the larger tie value), and the best objective and tie updated in place. 1 call
//   against 7 ops.
// keep_step_: the rows that improved copied into the best points, then the signed PGD step
//   projected onto the box, x = clamp(x - size * sign(g), lo, hi), in one pass over x, against
//   torch's 5 (copy, sign, sub, clamp and a nonzero to find the rows). The same values as
//   torch's ops; a zero's sign may differ where x ties a bound of the other sign (-0 vs +0).
// uniform_: uniform numbers in [0, 1), the only kernel not copying one of torch's ops: torch's
//   CPU generator (a Mersenne Twister) is serial, about 3 ns a number, where a search's uniform
//   start and the sampling metric draw millions. Element i is the (i + 1)-th output of
//   SplitMix64 (Steele, Lea and Flood 2014) seeded with `seed`, its top 24 bits (float) or 53
//   (double) scaled by 2^-24 or 2^-53; compiler/search.py's uniform() computes the same bits
//   with torch's integer ops where the kernel is not used (other devices, no compiler).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

template <typename T> struct Bits;
template <> struct Bits<float> { using U = uint32_t; static constexpr U abs = 0x7fffffffu; };
template <> struct Bits<double> { using U = uint64_t; static constexpr U abs = 0x7fffffffffffffffull; };

// v[j]: a[j], or a[j] - b[j] rounded as torch's sub rounds it (one IEEE subtraction)
template <typename T, bool Diff>
inline T value(const T* a, const T* b, int64_t j) {
  if constexpr (Diff) return a[j] - b[j]; else return a[j];
}

// |v| compared as unsigned integers: for non-negative floats the bit patterns are ordered as
// the values, and every NaN lies above +inf, so the maximum propagates NaN as amax does; the
// integer loops vectorise where a float max (with NaN rules) does not. A row is read by
// norm_row_fast (the maximum's bits, then its ties, then the first) or, with a NaN, by norm_row
// (one pass: each of W lanes keeps its largest |v|, how often it occurs and where first).
template <typename T, bool Diff>
inline typename Bits<T>::U abs_bits(const T* a, const T* b, int64_t j) {
  const T x = value<T, Diff>(a, b, j);
  typename Bits<T>::U u;
  std::memcpy(&u, &x, sizeof(T));
  return u & Bits<T>::abs;
}

// one row's max |v| (NaN if any), its count of ties (0 for NaN, torch's mask) and first tie
template <typename T, bool Diff>
inline void norm_row(const T* ra, const T* rb, int64_t n, T* m, T* count, int64_t* first) {
  using U = typename Bits<T>::U;
  using I = typename std::make_signed<U>::type;  // lane indices as wide as the lanes' values
  constexpr int64_t W = 64 / sizeof(T);          // one 512-bit register of lanes
  U best = 0, total = 0;
  int64_t where = 0;
  if (n < W) {  // a short row: one element at a time
    best = abs_bits<T, Diff>(ra, rb, 0);
    total = 1;
    for (int64_t j = 1; j < n; ++j) {
      const U u = abs_bits<T, Diff>(ra, rb, j);
      if (u > best) { best = u; total = 1; where = j; } else if (u == best) ++total;
    }
  } else {
    // each lane: its largest |v|, how often it occurs, where first (selects only, so the
    // loop vectorises); the lanes start from the first W elements
    U top[W], ties[W];
    I at[W];
    for (int64_t l = 0; l < W; ++l) {
      top[l] = abs_bits<T, Diff>(ra, rb, l);
      ties[l] = 1;
      at[l] = I(l);
    }
    const int64_t whole = n - n % W;
    for (int64_t j0 = W; j0 < whole; j0 += W) {
      for (int64_t l = 0; l < W; ++l) {
        const U u = abs_bits<T, Diff>(ra, rb, j0 + l);
        const bool gt = u > top[l];
        const U eq = u == top[l] ? U(1) : U(0);
        ties[l] = gt ? U(1) : ties[l] + eq;
        at[l] = gt ? I(j0 + l) : at[l];
        top[l] = gt ? u : top[l];
      }
    }
    for (int64_t j = whole; j < n; ++j) {  // the tail, one element per lane
      const int64_t l = j - whole;
      const U u = abs_bits<T, Diff>(ra, rb, j);
      if (u > top[l]) { top[l] = u; ties[l] = 1; at[l] = I(j); }
      else if (u == top[l]) ++ties[l];
    }
    for (int64_t l = 0; l < W; ++l) best = top[l] > best ? top[l] : best;
    where = n;
    for (int64_t l = 0; l < W; ++l)
      if (top[l] == best) { total += ties[l]; where = at[l] < where ? at[l] : where; }
  }
  T mf;
  std::memcpy(&mf, &best, sizeof(T));
  if (std::isnan(mf)) mf = std::numeric_limits<T>::quiet_NaN();  // amax's NaN, any payload
  *m = mf;
  *count = std::isnan(mf) ? T(0) : T(total);  // torch's mask: NaN equals nothing
  if (first) *first = where;
}

// norm_row's answer in three simple loops that vectorise fully (the row is in cache after the
// first): the largest |v| as bits (an integer maximum), the count of elements with those bits,
// the first of them; a row with a NaN (bits above infinity's) is left to norm_row, whose NaN
// rules (any payload, count 0) it keeps. norm_inf_split on [128, 784]: 23 us against 45.
template <typename T, bool Diff>
inline void norm_row_fast(const T* ra, const T* rb, int64_t n, T* m, T* count, int64_t* first) {
  using U = typename Bits<T>::U;
  const T inf = std::numeric_limits<T>::infinity();
  U inf_bits;
  std::memcpy(&inf_bits, &inf, sizeof(T));
  U best = 0;
  for (int64_t j = 0; j < n; ++j) {
    const U u = abs_bits<T, Diff>(ra, rb, j);
    best = u > best ? u : best;
  }
  if (best > inf_bits) {  // a NaN
    norm_row<T, Diff>(ra, rb, n, m, count, first);
    return;
  }
  int64_t total = 0;
  for (int64_t j = 0; j < n; ++j) total += abs_bits<T, Diff>(ra, rb, j) == best ? 1 : 0;
  if (first) {
    int64_t where = 0;
    while (abs_bits<T, Diff>(ra, rb, where) != best) ++where;
    *first = where;
  }
  T mf;
  std::memcpy(&mf, &best, sizeof(T));
  *m = mf;
  *count = T(total);
}

template <typename T, bool Diff>
void forward_rows(const T* a, const T* b, T* m, T* count, int64_t* first, int64_t rows,
                  int64_t n) {
  at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      norm_row_fast<T, Diff>(a + i * n, Diff ? b + i * n : nullptr, n, m + i, count + i,
                             first ? first + i : nullptr);
  });
}

template <typename T, bool Diff>
void backward_rows(const T* g, const T* a, const T* b, const T* m, const T* count, T* out,
                   int64_t rows, int64_t n) {
  at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* ra = a + i * n;
      const T* rb = Diff ? b + i * n : nullptr;
      T* o = out + i * n;
      const T scale = g[i] / count[i];
      const T top = m[i];
      for (int64_t j = 0; j < n; ++j) {
        const T x = value<T, Diff>(ra, rb, j);
        const T tie = std::fabs(x) == top ? T(1) : T(0);
        const T sgn = T((T(0) < x) - (x < T(0)));
        o[j] = (tie * scale) * sgn;  // torch's order: (mask * (g / count)) * sgn(v)
      }
    }
  });
}

void check_reduction(const torch::Tensor& v, int64_t ndims) {
  TORCH_CHECK(ndims > 0 && ndims <= v.dim(), "norm_inf: ndims must be 1 to ", v.dim(), ", got ",
              ndims);
  for (int64_t d = v.dim() - ndims; d < v.dim(); ++d)
    TORCH_CHECK(v.size(d) > 0, "norm_inf: an empty reduction (dimension ", d, " has size 0)");
}

int64_t row_length(const torch::Tensor& v, int64_t ndims) {
  int64_t n = 1;
  for (int64_t d = v.dim() - ndims; d < v.dim(); ++d) n *= v.size(d);
  return n;
}

// b undefined: max |a|; else max |a - b| (a and b of one shape and dtype)
// (and, given `with_first`, the index in each row of its first tie, a third tensor)
std::vector<torch::Tensor> norm_inf_forward(const torch::Tensor& a, const torch::Tensor& b,
                                            int64_t ndims, bool with_first = false) {
  const auto ac = a.contiguous();
  const auto bc = b.defined() ? b.contiguous() : b;
  const int64_t n = row_length(ac, ndims);
  const auto lead = ac.sizes().slice(0, ac.dim() - ndims);
  auto m = torch::empty(lead, ac.options());
  auto count = torch::empty(lead, ac.options());
  torch::Tensor first;
  if (with_first) first = torch::empty(lead, ac.options().dtype(torch::kInt64));
  int64_t* fp = with_first ? first.data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(ac.scalar_type(), "robustspec_norm_inf_forward", [&] {
    if (bc.defined())
      forward_rows<scalar_t, true>(ac.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(),
                                   m.data_ptr<scalar_t>(), count.data_ptr<scalar_t>(), fp,
                                   m.numel(), n);
    else
      forward_rows<scalar_t, false>(ac.data_ptr<scalar_t>(), nullptr, m.data_ptr<scalar_t>(),
                                    count.data_ptr<scalar_t>(), fp, m.numel(), n);
  });
  if (with_first) return {m, count, first};
  return {m, count};
}

// the gradient to v (to a; b's is its negation, as sub's backward gives)
torch::Tensor norm_inf_backward(const torch::Tensor& g, const torch::Tensor& a,
                                const torch::Tensor& b, const torch::Tensor& m,
                                const torch::Tensor& count, int64_t ndims) {
  if (torch::GradMode::is_enabled()) {  // create_graph=True: torch's ops, differentiable in g
    const auto v = b.defined() ? a - b : a;
    std::vector<int64_t> shape(m.sizes().begin(), m.sizes().end());
    shape.insert(shape.end(), ndims, 1);
    const auto mask = torch::eq(v.abs(), m.reshape(shape)).to(v.scalar_type());
    return (mask * (g / count).reshape(shape)) * v.sgn();
  }
  const auto ac = a.contiguous();
  const auto bc = b.defined() ? b.contiguous() : b;
  const auto gc = g.contiguous();
  auto out = torch::empty_like(ac);
  AT_DISPATCH_FLOATING_TYPES(ac.scalar_type(), "robustspec_norm_inf_backward", [&] {
    if (bc.defined())
      backward_rows<scalar_t, true>(gc.data_ptr<scalar_t>(), ac.data_ptr<scalar_t>(),
                                    bc.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
                                    count.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                    m.numel(), row_length(ac, ndims));
    else
      backward_rows<scalar_t, false>(gc.data_ptr<scalar_t>(), ac.data_ptr<scalar_t>(), nullptr,
                                     m.data_ptr<scalar_t>(), count.data_ptr<scalar_t>(),
                                     out.data_ptr<scalar_t>(), m.numel(), row_length(ac, ndims));
  });
  return out;
}

struct NativeNormInf : public torch::autograd::Function<NativeNormInf> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& v,
                               int64_t ndims) {
    auto out = norm_inf_forward(v, torch::Tensor(), ndims);
    ctx->save_for_backward({v, out[0], out[1]});
    ctx->saved_data["ndims"] = ndims;
    return out[0];
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    return {norm_inf_backward(grads[0], s[0], torch::Tensor(), s[1], s[2],
                              ctx->saved_data["ndims"].toInt()),
            torch::Tensor()};
  }
};

struct NativeNormInfOfDifference : public torch::autograd::Function<NativeNormInfOfDifference> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b, int64_t ndims) {
    auto out = norm_inf_forward(a, b, ndims);
    ctx->save_for_backward({a, b, out[0], out[1]});
    ctx->saved_data["ndims"] = ndims;
    return out[0];
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto ga = norm_inf_backward(grads[0], s[0], s[1], s[2], s[3],
                                ctx->saved_data["ndims"].toInt());
    torch::Tensor gb;
    if (ctx->needs_input_grad(1)) gb = ga.neg();  // sub's gradient to its second operand
    if (!ctx->needs_input_grad(0)) ga = torch::Tensor();
    return {ga, gb, torch::Tensor()};
  }
};

// max |v| over v's trailing ndims dimensions
torch::Tensor norm_inf(const torch::Tensor& v, int64_t ndims) {
  check_reduction(v, ndims);
  return NativeNormInf::apply(v, ndims);
}

// max |a - b| over the trailing ndims dimensions, a and b of one shape
torch::Tensor norm_inf_of_difference(const torch::Tensor& a, const torch::Tensor& b,
                                     int64_t ndims) {
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type(),
              "norm_inf_of_difference: a and b differ in shape or dtype");
  check_reduction(a, ndims);
  return NativeNormInfOfDifference::apply(a, b, ndims);
}

// The PGD search's split gradient (compiler/lower.py split_norm_inf, compiler/search.py): for a
// searched point a, norm_inf(a - b) is taken without an autograd node (its value, count of ties
// and first tie per row), and autograd is asked for the gradient of the norm instead of a's.
// norm_inf_fold_ then adds the norm's share of a's gradient into the network's share g in place,
// as autograd's sum of the two would: a row with one tie and a finite scale changes one element
// (the others would get a signed zero added, which changes nothing but a zero's sign); any other
// row (ties, NaN, an infinite scale) gets torch's whole formula added. So no full-size gradient
// of the norm is written and no full-size sum is taken.
std::vector<torch::Tensor> norm_inf_split(const torch::Tensor& a, const torch::Tensor& b,
                                          int64_t ndims) {
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type(),
              "norm_inf_split: a and b differ in shape or dtype");
  check_reduction(a, ndims);
  torch::NoGradGuard no_grad;
  return norm_inf_forward(a.detach(), b.detach(), ndims, true);
}

template <typename T>
void fold_rows(T* g, const T* gn, const T* a, const T* b, const T* m, const T* count,
               const int64_t* first, int64_t rows, int64_t n) {
  at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* ra = a + i * n;
      const T* rb = b + i * n;
      T* o = g + i * n;
      const T scale = gn[i] / count[i];
      if (count[i] == T(1) && std::isfinite(scale)) {
        const int64_t j = first[i];
        const T x = ra[j] - rb[j];
        const T sgn = T((T(0) < x) - (x < T(0)));
        o[j] = o[j] + scale * sgn;
        continue;
      }
      const T top = m[i];
      for (int64_t j = 0; j < n; ++j) {
        const T x = ra[j] - rb[j];
        const T tie = std::fabs(x) == top ? T(1) : T(0);
        const T sgn = T((T(0) < x) - (x < T(0)));
        o[j] = o[j] + (tie * scale) * sgn;
      }
    }
  });
}

void norm_inf_fold_(torch::Tensor g, const torch::Tensor& gn, const torch::Tensor& a,
                    const torch::Tensor& b, const torch::Tensor& m, const torch::Tensor& count,
                    const torch::Tensor& first, int64_t ndims) {
  TORCH_CHECK(g.is_contiguous() && g.sizes() == a.sizes() && g.scalar_type() == a.scalar_type(),
              "norm_inf_fold_: g must be a contiguous gradient of a");
  TORCH_CHECK(gn.sizes() == m.sizes() && gn.scalar_type() == a.scalar_type(),
              "norm_inf_fold_: gn must be the norm's gradient");
  torch::NoGradGuard no_grad;
  const auto ac = a.contiguous();
  const auto bc = b.contiguous();
  const auto gnc = gn.contiguous();
  AT_DISPATCH_FLOATING_TYPES(ac.scalar_type(), "robustspec_norm_inf_fold", [&] {
    fold_rows<scalar_t>(g.data_ptr<scalar_t>(), gnc.data_ptr<scalar_t>(), ac.data_ptr<scalar_t>(),
                        bc.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
                        count.data_ptr<scalar_t>(), first.data_ptr<int64_t>(), m.numel(),
                        row_length(ac, ndims));
  });
}

// box_: a search domain's box from its L-infinity ball and constant bounds, in one pass over the
// center c: lo = maximum(lower, c - r), hi = minimum(upper, c + r), width = hi - lo, with torch's
// rounding and NaN propagation (maximum and minimum as torch's vectorised ones: on equal operands,
// signed zeros included, the second; lower and upper are not NaN). Also which rows are empty (some
// width < 0; a NaN width is not) and whether the box is one point (no width > 0 or NaN: what
// `amax(width) <= 0` says): what compiler/search.py's RealDomain asks of its bounds once per
// search, against torch's 5 passes and 3 reductions. Selects and integer counts only, so the loop
// vectorises.
template <typename T>
void box_rows(const T* __restrict__ c, T r, T lower, T upper, T* __restrict__ lo,
              T* __restrict__ hi, T* __restrict__ width, bool* empty, int64_t* wide,
              int64_t rows, int64_t n) {
  at::parallel_for(0, rows, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* ci = c + i * n;
      T* l = lo + i * n;
      T* h = hi + i * n;
      T* w = width + i * n;
      int64_t negative = 0, positive = 0;
      for (int64_t j = 0; j < n; ++j) {
        const T down = ci[j] - r;
        const T up = ci[j] + r;
        const T lj = lower > down ? lower : down;  // a NaN `down` compares false: kept
        const T hj = upper < up ? upper : up;
        const T wj = hj - lj;
        l[j] = lj;
        h[j] = hj;
        w[j] = wj;
        negative += wj < T(0) ? 1 : 0;
        positive += wj <= T(0) ? 0 : 1;  // > 0 or NaN
      }
      empty[i] = negative > 0;
      wide[i] = positive;
    }
  });
}

std::vector<torch::Tensor> box_(const torch::Tensor& c, double r, double lower, double upper) {
  TORCH_CHECK(c.dim() >= 1 && c.size(0) > 0 && c.numel() > 0, "box_: an empty center");
  TORCH_CHECK(!std::isnan(lower) && !std::isnan(upper), "box_: NaN bounds");
  const auto cc = c.contiguous();
  auto lo = torch::empty_like(cc);
  auto hi = torch::empty_like(cc);
  auto width = torch::empty_like(cc);
  auto empty = torch::empty({cc.size(0)}, cc.options().dtype(torch::kBool));
  std::vector<int64_t> wide(cc.size(0));
  AT_DISPATCH_FLOATING_TYPES(cc.scalar_type(), "robustspec_box", [&] {
    box_rows<scalar_t>(cc.data_ptr<scalar_t>(), scalar_t(r), scalar_t(lower), scalar_t(upper),
                       lo.data_ptr<scalar_t>(), hi.data_ptr<scalar_t>(),
                       width.data_ptr<scalar_t>(), empty.data_ptr<bool>(), wide.data(),
                       cc.size(0), cc.numel() / cc.size(0));
  });
  bool point = true;
  for (const auto k : wide) point = point && k == 0;
  return {lo, hi, width, empty, torch::tensor(point)};
}

// ------------------------------------------------------------------ elementwise atoms
// relu_sub: relu(a - b), plus w at the elements where a == b when w != 0 (DL2's atoms: a <= b is
// relu(a - b), a < b adds xi * [a == b]); abs_sub: |a - b| (DL2's ==, and a per-class
// |f(x)[j] - f(x0)[j]|). One call and one backward node against torch's 2-6 ops and 2-3 nodes.
// a and b: one shape, or either 0-dim (a constant such as delta). The values are torch's: relu
// keeps -0 and NaN (x < 0 ? 0 : x), the eq term is r + (T(a == b) * T(w)); the gradients too:
// relu's (result <= 0 ? 0 : g), abs's (g * sgn(a - b), sgn 0 at 0 and NaN), sub's (the second
// operand's is the negation, summed to a 0-dim operand's shape by torch's sum).

template <typename T, bool Abs>
void atom_forward(const T* a, int64_t sa, const T* b, int64_t sb, T w, bool with_eq, T* out,
                  int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T x = a[i * sa], y = b[i * sb];
    const T d = x - y;
    if constexpr (Abs) {
      out[i] = std::fabs(d);
    } else {
      T r = d < T(0) ? T(0) : d;
      if (with_eq) r = r + T(x == y ? T(1) : T(0)) * w;
      out[i] = r;
    }
  }
}

template <typename T, bool Abs>
void atom_backward(const T* g, const T* a, int64_t sa, const T* b, int64_t sb, T* ga, T* gb,
                   int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T d = a[i * sa] - b[i * sb];
    T v;
    if constexpr (Abs) {
      v = g[i] * T((T(0) < d) - (d < T(0)));
    } else {
      const T r = d < T(0) ? T(0) : d;
      v = r <= T(0) ? T(0) : g[i];
    }
    if (ga) ga[i] = v;
    if (gb) gb[i] = -v;
  }
}

bool scalar_or_same(const torch::Tensor& a, const torch::Tensor& b) {
  return a.dim() == 0 || b.dim() == 0 || a.sizes() == b.sizes();
}

template <bool Abs>
torch::Tensor atom_forward_t(const torch::Tensor& a, const torch::Tensor& b, double w) {
  const auto ac = a.contiguous(), bc = b.contiguous();
  auto out = torch::empty(ac.dim() ? ac.sizes() : bc.sizes(), ac.options());
  const int64_t n = out.numel();
  AT_DISPATCH_FLOATING_TYPES(ac.scalar_type(), "robustspec_atom_forward", [&] {
    atom_forward<scalar_t, Abs>(ac.data_ptr<scalar_t>(), ac.dim() ? 1 : 0,
                                bc.data_ptr<scalar_t>(), bc.dim() ? 1 : 0,
                                static_cast<scalar_t>(w), w != 0.0, out.data_ptr<scalar_t>(), n);
  });
  return out;
}

// the gradients to a and b (undefined where not needed), of the shape of the output, then
// summed to a 0-dim operand as autograd would
template <bool Abs>
std::vector<torch::Tensor> atom_backward_t(const torch::Tensor& g, const torch::Tensor& a,
                                           const torch::Tensor& b, bool need_a, bool need_b) {
  if (torch::GradMode::is_enabled()) {  // create_graph=True: torch's ops, differentiable in g
    const auto d = a - b;
    const auto v = Abs ? g * d.sgn() : at::threshold_backward(g, torch::relu(d), 0);
    torch::Tensor ga, gb;
    if (need_a) ga = a.dim() || !v.dim() ? v : v.sum();
    if (need_b) gb = b.dim() || !v.dim() ? v.neg() : v.neg().sum();
    return {ga, gb};
  }
  const auto ac = a.contiguous(), bc = b.contiguous(), gc = g.contiguous();
  torch::Tensor ga, gb;
  if (need_a) ga = torch::empty_like(gc);
  if (need_b) gb = torch::empty_like(gc);
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "robustspec_atom_backward", [&] {
    atom_backward<scalar_t, Abs>(gc.data_ptr<scalar_t>(), ac.data_ptr<scalar_t>(),
                                 ac.dim() ? 1 : 0, bc.data_ptr<scalar_t>(), bc.dim() ? 1 : 0,
                                 need_a ? ga.data_ptr<scalar_t>() : nullptr,
                                 need_b ? gb.data_ptr<scalar_t>() : nullptr, gc.numel());
  });
  // a 0-dim operand of a larger output: the same sum autograd's reduction takes
  if (need_a && a.dim() == 0 && gc.dim()) ga = ga.sum();
  if (need_b && b.dim() == 0 && gc.dim()) gb = gb.sum();
  return {ga, gb};
}

template <bool Abs>
struct NativeAtom : public torch::autograd::Function<NativeAtom<Abs>> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b, double w) {
    ctx->save_for_backward({a, b});
    return atom_forward_t<Abs>(a, b, w);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto gs = atom_backward_t<Abs>(grads[0], s[0], s[1], ctx->needs_input_grad(0),
                                   ctx->needs_input_grad(1));
    return {gs[0], gs[1], torch::Tensor()};
  }
};

void check_atom(const torch::Tensor& a, const torch::Tensor& b, const char* name) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == b.scalar_type()
              && (a.scalar_type() == torch::kFloat || a.scalar_type() == torch::kDouble)
              && scalar_or_same(a, b),
              name, ": a and b must be CPU float32/64 tensors of one dtype, of one shape or "
              "either 0-dim");
}

// relu(a - b) (+ w * [a == b] where w != 0), with torch's gradients
torch::Tensor relu_sub(const torch::Tensor& a, const torch::Tensor& b, double w) {
  check_atom(a, b, "relu_sub");
  return NativeAtom<false>::apply(a, b, w);
}

// |a - b|, with torch's gradients
torch::Tensor abs_sub(const torch::Tensor& a, const torch::Tensor& b) {
  check_atom(a, b, "abs_sub");
  return NativeAtom<true>::apply(a, b, 0.0);
}

// ------------------------------------------------------------------ prod over the last axis

template <typename T>
void prod_forward_rows(const T* v, T* out, int64_t rows, int64_t n) {
  at::parallel_for(0, rows, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* r = v + i * n;
      T acc = T(1);
      for (int64_t j = 0; j < n; ++j) acc = acc * r[j];  // torch's order for n < 16
      out[i] = acc;
    }
  });
}

template <typename T>
void prod_backward_rows(const T* g, const T* v, const T* p, T* out, int64_t rows, int64_t n,
                        bool any_zero) {
  at::parallel_for(0, rows, 256, [&](int64_t lo, int64_t hi) {
    T before[16];
    for (int64_t i = lo; i < hi; ++i) {
      const T* r = v + i * n;
      T* o = out + i * n;
      if (!any_zero) {  // torch: grad * (result / input)
        for (int64_t j = 0; j < n; ++j) o[j] = g[i] * (p[i] / r[j]);
        continue;
      }
      // torch's prod_safe_zeros_backward: exclusive cumulative products from each end, by
      // torch's cumprod, which accumulates in double and rounds each output to T
      double acc = 1.0;
      for (int64_t j = 0; j < n; ++j) { before[j] = T(acc); acc = acc * double(r[j]); }
      acc = 1.0;
      for (int64_t j = n - 1; j >= 0; --j) {
        o[j] = g[i] * (before[j] * T(acc));
        acc = acc * double(r[j]);
      }
    }
  });
}

torch::Tensor prod_last_forward(const torch::Tensor& v) {
  const auto vc = v.contiguous();
  const int64_t n = vc.size(-1);
  auto out = torch::empty(vc.sizes().slice(0, vc.dim() - 1), vc.options());
  AT_DISPATCH_FLOATING_TYPES(vc.scalar_type(), "robustspec_prod_forward", [&] {
    prod_forward_rows<scalar_t>(vc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), out.numel(), n);
  });
  return out;
}

torch::Tensor prod_last_backward(const torch::Tensor& g, const torch::Tensor& v,
                                 const torch::Tensor& p) {
  if (torch::GradMode::is_enabled()) {  // create_graph=True: the same formulas in torch's ops
    const bool any_zero = torch::eq(v, 0).any().item<bool>();
    const auto gu = g.unsqueeze(-1);
    if (!any_zero) return gu * (p.unsqueeze(-1) / v);
    const int64_t n = v.size(-1);
    auto ones = torch::ones_like(v.narrow(-1, 0, 1));
    auto before = torch::cat({ones, v.narrow(-1, 0, n - 1)}, -1).cumprod(-1);
    auto after = torch::cat({ones, v.narrow(-1, 1, n - 1).flip(-1)}, -1).cumprod(-1).flip(-1);
    return gu * (before * after);
  }
  const auto vc = v.contiguous();
  const auto gc = g.contiguous();
  const auto pc = p.contiguous();
  auto out = torch::empty_like(vc);
  AT_DISPATCH_FLOATING_TYPES(vc.scalar_type(), "robustspec_prod_backward", [&] {
    // torch picks the formula for the whole tensor: the zero-safe one if any factor is 0
    const scalar_t* d = vc.data_ptr<scalar_t>();
    bool any_zero = false;
    for (int64_t k = 0, m = vc.numel(); k < m; ++k) any_zero |= d[k] == scalar_t(0);
    prod_backward_rows<scalar_t>(gc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(),
                                 pc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), pc.numel(),
                                 vc.size(-1), any_zero);
  });
  return out;
}

struct NativeProdLast : public torch::autograd::Function<NativeProdLast> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& v) {
    auto p = prod_last_forward(v);
    ctx->save_for_backward({v, p});
    return p;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    return {prod_last_backward(grads[0], s[0], s[1])};
  }
};

// the product over v's last axis (1 to 15 long: where torch multiplies in order)
torch::Tensor prod_last(const torch::Tensor& v) {
  TORCH_CHECK(v.dim() >= 1 && v.size(-1) >= 1 && v.size(-1) < 16,
              "prod_last: the last axis must be 1 to 15 long");
  return NativeProdLast::apply(v);
}

// ------------------------------------------------------------------ a label's score and the best other
// The margin form of argmax(v) == c (compiler/normalise.py): v[c] and max_except(v, c), which
// torch computes as gather + squeeze and masked_fill(-inf) + amax, with 4 backward nodes and
// amax's 5-op backward. One pass over each row forward and one backward, the same bits for rows
// shorter than 16 doubles or 32 floats, where torch's amax takes the values in order (longer
// rows: a tie of -0 and +0 can come out with the other sign; the lowering keeps torch's ops).
template <typename T>
void score_rest_forward(const T* v, const int64_t* c, int64_t rows, int64_t n, T* score, T* rest) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = v + i * n;
    const int64_t k = c[i];
    score[i] = row[k];
    T m = -std::numeric_limits<T>::infinity();
    bool nan = false;
    for (int64_t j = 0; j < n; ++j) {
      if (j == k) continue;  // masked_fill's -inf, below every other value
      const T x = row[j];
      if (std::isnan(x)) {
        nan = true;
      } else if (x > m) {  // the first of equal values: torch's in-order max (rows < 16/32)
        m = x;
      }
    }
    rest[i] = nan ? std::numeric_limits<T>::quiet_NaN() : m;  // amax's NaN: the canonical one
  }
}

// torch's gradient: gather's (new_zeros, then scatter_add of g_score at c: 0 + g) summed with
// masked_fill's (0 at c) of amax's ((g_rest / ties) * [masked v == rest], the ties counted in
// the masked row, so with -inf at c where rest is -inf; NaN everywhere when rest is NaN); where
// both gradients arrive autograd adds them, which turns -0 into +0
template <typename T>
void score_rest_backward(const T* gs, const T* gr, const T* v, const int64_t* c, const T* rest,
                         int64_t rows, int64_t n, T* out) {
  const T ninf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = v + i * n;
    T* o = out + i * n;
    const int64_t k = c[i];
    if (gr != nullptr) {
      const T r = rest[i];
      int64_t ties = 0;
      for (int64_t j = 0; j < n; ++j) ties += ((j == k ? ninf : row[j]) == r);
      const T q = gr[i] / static_cast<T>(ties);
      for (int64_t j = 0; j < n; ++j) {
        const T e = j == k ? T(0) : q * static_cast<T>((row[j] == r) ? 1 : 0);
        o[j] = gs != nullptr ? e + T(0) : e;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) o[j] = T(0);
    }
    if (gs != nullptr) o[k] = (T(0) + gs[i]) + T(0);
  }
}

struct NativeScoreRest : public torch::autograd::Function<NativeScoreRest> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& v, const torch::Tensor& c) {
    const auto vc = v.contiguous();
    auto score = torch::empty({vc.size(0)}, vc.options());
    auto rest = torch::empty({vc.size(0)}, vc.options());
    AT_DISPATCH_FLOATING_TYPES(vc.scalar_type(), "robustspec_score_rest", [&] {
      score_rest_forward<scalar_t>(vc.data_ptr<scalar_t>(), c.data_ptr<int64_t>(), vc.size(0),
                                   vc.size(1), score.data_ptr<scalar_t>(), rest.data_ptr<scalar_t>());
    });
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({vc, c, rest});
    return {score, rest};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto& v = s[0];
    const auto& c = s[1];
    const auto& rest = s[2];
    const bool has_s = grads[0].defined(), has_r = grads[1].defined();
    if (!has_s && !has_r) return {torch::Tensor(), torch::Tensor()};
    if (torch::GradMode::is_enabled()) {  // create_graph=True: torch's ops, differentiable in g
      const auto idx = c.unsqueeze(1);
      torch::Tensor gs_v, gr_v;
      if (has_s) gs_v = torch::zeros_like(v).scatter_add(1, idx, grads[0].unsqueeze(1));
      if (has_r) {
        const auto masked = v.masked_fill(
            torch::zeros_like(v, v.options().dtype(torch::kBool)).scatter_(1, idx, true),
            -std::numeric_limits<double>::infinity());
        const auto tie = masked == rest.unsqueeze(1);
        gr_v = ((grads[1].unsqueeze(1) / tie.sum(1, true)) * tie).scatter(1, idx, 0.0);
      }
      return {has_s && has_r ? gs_v + gr_v : (has_s ? gs_v : gr_v), torch::Tensor()};
    }
    auto out = torch::empty_like(v);
    const auto gs = has_s ? grads[0].contiguous() : torch::Tensor();
    const auto gr = has_r ? grads[1].contiguous() : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "robustspec_score_rest_backward", [&] {
      score_rest_backward<scalar_t>(has_s ? gs.data_ptr<scalar_t>() : nullptr,
                                    has_r ? gr.data_ptr<scalar_t>() : nullptr,
                                    v.data_ptr<scalar_t>(), c.data_ptr<int64_t>(),
                                    rest.data_ptr<scalar_t>(), v.size(0), v.size(1),
                                    out.data_ptr<scalar_t>());
    });
    return {out, torch::Tensor()};
  }
};

// (v[c], max over j != c of v[j]) for v [rows, n] and labels c [rows] (int64 in [0, n)), as
// torch's gather and masked_fill + amax give them, with their gradients to v
std::vector<torch::Tensor> score_rest(const torch::Tensor& v, const torch::Tensor& c) {
  TORCH_CHECK(v.dim() == 2 && c.dim() == 1 && c.size(0) == v.size(0) && v.size(1) >= 1
              && v.device().is_cpu() && c.device().is_cpu() && c.scalar_type() == torch::kLong
              && (v.scalar_type() == torch::kFloat || v.scalar_type() == torch::kDouble),
              "score_rest: v must be a CPU float32/64 [rows, n], c int64 [rows]");
  const auto cc = c.contiguous();
  const int64_t n = v.size(1);
  const int64_t* p = cc.data_ptr<int64_t>();
  for (int64_t i = 0; i < cc.numel(); ++i)
    TORCH_CHECK(p[i] >= 0 && p[i] < n, "score_rest: index ", p[i], " out of range for ", n,
                " classes");
  auto out = NativeScoreRest::apply(v, cc);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------ PGD bookkeeping and step
template <typename T>
void better_rows(const T* obj, const T* tie, T* best, T* best_tie, bool* better, int64_t rows) {
  for (int64_t i = 0; i < rows; ++i) {
    const T o = obj[i], b = best[i];
    bool up = o < b || (std::isnan(b) && !std::isnan(o));
    if (tie != nullptr) up = up || (o == b && tie[i] > best_tie[i]);
    better[i] = up;
    if (up) {
      best[i] = o;
      if (tie != nullptr) best_tie[i] = tie[i];
    }
  }
}

// which rows improved; best (and best_tie) updated in place. obj, best: [rows], one dtype
torch::Tensor better_(const torch::Tensor& obj, const c10::optional<torch::Tensor>& tie,
                      torch::Tensor best, const c10::optional<torch::Tensor>& best_tie) {
  TORCH_CHECK(obj.dim() == 1 && best.sizes() == obj.sizes() && best.scalar_type() == obj.scalar_type()
              && best.is_contiguous() && obj.device().is_cpu() && best.device().is_cpu(),
              "better_: obj and best must be CPU [rows] tensors of one dtype, best contiguous");
  const bool with_tie = tie.has_value() && tie->defined();
  TORCH_CHECK(with_tie == (best_tie.has_value() && best_tie->defined()),
              "better_: give tie and best_tie together");
  const auto oc = obj.contiguous();
  torch::Tensor tc;
  if (with_tie) {
    TORCH_CHECK(tie->sizes() == obj.sizes() && best_tie->sizes() == obj.sizes()
                && tie->scalar_type() == obj.scalar_type()
                && best_tie->scalar_type() == obj.scalar_type() && best_tie->is_contiguous()
                && tie->device().is_cpu() && best_tie->device().is_cpu(),
                "better_: tie and best_tie must match obj, best_tie contiguous");
    tc = tie->contiguous();
  }
  auto better = torch::empty(obj.sizes(), obj.options().dtype(torch::kBool));
  AT_DISPATCH_FLOATING_TYPES(oc.scalar_type(), "robustspec_better", [&] {
    better_rows<scalar_t>(oc.data_ptr<scalar_t>(), with_tie ? tc.data_ptr<scalar_t>() : nullptr,
                          best.data_ptr<scalar_t>(),
                          with_tie ? best_tie->data_ptr<scalar_t>() : nullptr,
                          better.data_ptr<bool>(), oc.numel());
  });
  return better;
}

// x = clamp(x - size * sign(g), lo, hi) over one row, as torch's sign, sub and vectorised clamp
// compute it: sign 0 for 0, -0 and NaN; the clamp NaN if any operand is NaN, else maximum then
// minimum with the x86 rule for equal operands (the second one is returned). Selects only, no
// branches, so the loop vectorises.
template <typename T>
inline T step_element(T x, T gv, T l, T h, T size) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  T s = gv > T(0) ? T(1) : T(0);
  s = gv < T(0) ? T(-1) : s;
  const T y = x - size * s;
  T a = y > l ? y : l;
  a = __builtin_isunordered(y, l) ? nan : a;
  const T b = a < h ? a : h;
  return __builtin_isunordered(a, h) ? nan : b;
}

template <typename T>
void step_row(T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ lo,
              const T* __restrict__ hi, T size, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = step_element(x[j], g[j], lo[j], hi[j], size);
}

template <typename T>
void keep_step_rows(T* x, T* best_x, const bool* better, const T* g, const T* lo, const T* hi,
                    T size, int64_t rows, int64_t n) {
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      if (better[i]) std::memcpy(best_x + i * n, x + i * n, sizeof(T) * n);
      if (g != nullptr) step_row<T>(x + i * n, g + i * n, lo + i * n, hi + i * n, size, n);
    }
  });
}

// best_x[i] = x[i] where better[i]; then, given g, x = clamp(x - size * sign(g), lo, hi), in
// place. x, best_x, g, lo, hi: contiguous CPU tensors of one shape and dtype; better: bool [rows]
void keep_step_(torch::Tensor x, torch::Tensor best_x, const torch::Tensor& better,
                const c10::optional<torch::Tensor>& g, const c10::optional<torch::Tensor>& lo,
                const c10::optional<torch::Tensor>& hi, double size) {
  TORCH_CHECK(x.dim() >= 1 && x.device().is_cpu() && best_x.device().is_cpu() && x.is_contiguous()
              && best_x.is_contiguous() && best_x.sizes() == x.sizes()
              && best_x.scalar_type() == x.scalar_type(),
              "keep_step_: x and best_x must be contiguous CPU tensors of one shape and dtype");
  TORCH_CHECK(better.scalar_type() == torch::kBool && better.is_contiguous()
              && better.device().is_cpu() && better.numel() == x.size(0),
              "keep_step_: better must be a CPU bool [rows]");
  const bool step = g.has_value() && g->defined();
  if (step) {
    TORCH_CHECK(lo.has_value() && lo->defined() && hi.has_value() && hi->defined(),
                "keep_step_: a step needs both bounds, lo and hi");
    for (const torch::Tensor* t : {&*g, &*lo, &*hi})
      TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->sizes() == x.sizes()
                  && t->scalar_type() == x.scalar_type(),
                  "keep_step_: g, lo and hi must be contiguous CPU tensors shaped and typed as x");
  }
  const int64_t rows = x.size(0), n = rows ? x.numel() / rows : 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "robustspec_keep_step", [&] {
    keep_step_rows<scalar_t>(x.data_ptr<scalar_t>(), best_x.data_ptr<scalar_t>(),
                             better.data_ptr<bool>(), step ? g->data_ptr<scalar_t>() : nullptr,
                             step ? lo->data_ptr<scalar_t>() : nullptr,
                             step ? hi->data_ptr<scalar_t>() : nullptr,
                             static_cast<scalar_t>(size), rows, n);
  });
}

// keep_fold_step_: LR's PGD step in one pass per row (compiler/search.py, lower.SplitNormInf):
// the improved rows kept (as keep_step_), the gradient gn of the norm_inf(x - x0) leaf folded in
// (as norm_inf_fold_ would add it into g, but into the step's own reading of g: g is not
// written), the step taken, and the norm of the stepped x against x0 taken for the next
// evaluation (norm, ties, first tie: what norm_inf_split would return). Against the split's pass
// and the fold's pass over x and x0 a step, one more read of x0 in the step's pass.
// step_row with the norm's gradient folded into each element's reading of g, as the fold's
// formula adds it: g + (tie * scale) * sgn(x - x0), tie = |x - x0| == top (one loop, no buffer)
template <typename T>
void step_fold_row(T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ lo,
                   const T* __restrict__ hi, T size, const T* __restrict__ x0, T top, T scale,
                   int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T d = x[j] - x0[j];
    const T tie = std::fabs(d) == top ? T(1) : T(0);
    const T dsgn = d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0));
    x[j] = step_element(x[j], g[j] + (tie * scale) * dsgn, lo[j], hi[j], size);
  }
}

template <typename T>
void keep_fold_step_rows(T* x, T* best_x, const bool* better, const T* g, const T* lo,
                         const T* hi, T size, const T* x0, const T* gn, const T* m,
                         const T* count, const int64_t* first, T* m_out, T* count_out,
                         int64_t* first_out, int64_t rows, int64_t n) {
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      T* xr = x + i * n;
      const T* gr = g + i * n;
      const T* lr = lo + i * n;
      const T* hr = hi + i * n;
      const T* cr = x0 + i * n;
      if (better[i]) std::memcpy(best_x + i * n, xr, sizeof(T) * n);
      if (gn == nullptr) {
        step_row<T>(xr, gr, lr, hr, size, n);
      } else {
        const T scale = gn[i] / count[i];
        if (count[i] == T(1) && std::isfinite(scale)) {  // one tie: one element changes
          const int64_t j = first[i];
          const T d = xr[j] - cr[j];
          const T gj = gr[j] + scale * T((T(0) < d) - (d < T(0)));
          T xj = xr[j];
          step_row<T>(xr, gr, lr, hr, size, n);
          step_row<T>(&xj, &gj, lr + j, hr + j, size, 1);
          xr[j] = xj;
        } else {  // ties, NaN or an infinite scale: the whole row, as the fold's formula
          step_fold_row<T>(xr, gr, lr, hr, size, cr, m[i], scale, n);
        }
      }
      norm_row_fast<T, true>(xr, cr, n, m_out + i, count_out + i, first_out + i);
    }
  });
}

// x, best_x, g, lo, hi, x0: contiguous CPU tensors of one shape and dtype; better: bool [rows];
// gn (optional: no fold), m, count: [rows] of that dtype, first: int64 [rows], the split's
// answer for x as it is. Returns [m, count, first] for x as stepped.
std::vector<torch::Tensor> keep_fold_step_(torch::Tensor x, torch::Tensor best_x,
                                           const torch::Tensor& better, const torch::Tensor& g,
                                           const torch::Tensor& lo, const torch::Tensor& hi,
                                           double size, const torch::Tensor& x0,
                                           const c10::optional<torch::Tensor>& gn,
                                           const torch::Tensor& m, const torch::Tensor& count,
                                           const torch::Tensor& first) {
  TORCH_CHECK(x.dim() >= 1 && x.size(0) > 0 && x.numel() > 0, "keep_fold_step_: an empty x");
  for (const torch::Tensor* t : std::initializer_list<const torch::Tensor*>{&best_x, &g, &lo, &hi, &x0})
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->sizes() == x.sizes()
                && t->scalar_type() == x.scalar_type(),
                "keep_fold_step_: best_x, g, lo, hi and x0 must be contiguous CPU tensors shaped "
                "and typed as x");
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "keep_fold_step_: x must be contiguous");
  const int64_t rows = x.size(0), n = x.numel() / rows;
  TORCH_CHECK(better.scalar_type() == torch::kBool && better.is_contiguous()
              && better.device().is_cpu() && better.numel() == rows,
              "keep_fold_step_: better must be a CPU bool [rows]");
  const bool fold = gn.has_value() && gn->defined();
  for (const torch::Tensor* t : std::initializer_list<const torch::Tensor*>{&m, &count})
    TORCH_CHECK(t->numel() == rows && t->is_contiguous() && t->scalar_type() == x.scalar_type(),
                "keep_fold_step_: m and count must be [rows] of x's dtype");
  TORCH_CHECK(first.numel() == rows && first.is_contiguous()
              && first.scalar_type() == torch::kInt64, "keep_fold_step_: first must be int64 [rows]");
  torch::Tensor gnc;
  if (fold) {
    TORCH_CHECK(gn->numel() == rows && gn->scalar_type() == x.scalar_type(),
                "keep_fold_step_: gn must be [rows] of x's dtype");
    gnc = gn->contiguous();
  }
  auto m_out = torch::empty({rows}, x.options());
  auto count_out = torch::empty({rows}, x.options());
  auto first_out = torch::empty({rows}, x.options().dtype(torch::kInt64));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "robustspec_keep_fold_step", [&] {
    keep_fold_step_rows<scalar_t>(
        x.data_ptr<scalar_t>(), best_x.data_ptr<scalar_t>(), better.data_ptr<bool>(),
        g.data_ptr<scalar_t>(), lo.data_ptr<scalar_t>(), hi.data_ptr<scalar_t>(),
        static_cast<scalar_t>(size), x0.data_ptr<scalar_t>(),
        fold ? gnc.data_ptr<scalar_t>() : nullptr, m.data_ptr<scalar_t>(),
        count.data_ptr<scalar_t>(), first.data_ptr<int64_t>(), m_out.data_ptr<scalar_t>(),
        count_out.data_ptr<scalar_t>(), first_out.data_ptr<int64_t>(), rows, n);
  });
  return {m_out.reshape(m.sizes()), count_out.reshape(m.sizes()), first_out.reshape(m.sizes())};
}

// ------------------------------------------------------------------ uniform numbers
inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// out[i] = the (i + 1)-th SplitMix64 output from `seed`, as a uniform number in [0, 1). The
// conversions go through 32-bit integers (exact: the parts are below 2^27) so the loop
// vectorises without 64-bit integer-to-float instructions.
template <typename T>
void uniform_fill(T* __restrict__ out, int64_t n, uint64_t seed) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const uint64_t x = splitmix64_mix(seed + static_cast<uint64_t>(i + 1) * 0x9e3779b97f4a7c15ull);
      if constexpr (std::is_same_v<T, float>) {
        out[i] = static_cast<float>(static_cast<int32_t>(x >> 40)) * 0x1p-24f;
      } else {
        const double top = static_cast<double>(static_cast<int32_t>(x >> 37));  // 27 bits
        const double low = static_cast<double>(static_cast<int32_t>((x >> 11) & 0x3ffffffull));
        out[i] = (top * 0x1p26 + low) * 0x1p-53;  // (x >> 11) * 2^-53, exactly
      }
    }
  });
}

// fills out (a contiguous CPU float or double tensor) with uniform numbers in [0, 1)
void uniform_(torch::Tensor out, int64_t seed) {
  TORCH_CHECK(out.device().is_cpu() && out.is_contiguous()
              && (out.scalar_type() == torch::kFloat || out.scalar_type() == torch::kDouble),
              "uniform_: out must be a contiguous CPU float32 or float64 tensor");
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "robustspec_uniform", [&] {
    uniform_fill<scalar_t>(out.data_ptr<scalar_t>(), out.numel(), static_cast<uint64_t>(seed));
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("norm_inf", &norm_inf, "max |v| over the trailing ndims, with torch's gradient");
  module.def("norm_inf_of_difference", &norm_inf_of_difference,
             "max |a - b| over the trailing ndims, with torch's gradients");
  module.def("norm_inf_split", &norm_inf_split,
             "norm_inf(a - b) without a graph: the norm, its ties and each row's first tie");
  module.def("norm_inf_fold_", &norm_inf_fold_,
             "the norm's gradient added into a's gradient g in place, as autograd's sum would");
  module.def("box_", &box_, "a ball's box within constant bounds: lo, hi, width, empty rows, one point?");
  module.def("relu_sub", &relu_sub, "relu(a - b) (+ w * [a == b]), with torch's gradients");
  module.def("abs_sub", &abs_sub, "|a - b|, with torch's gradients");
  module.def("score_rest", &score_rest,
             "(v[c], max over j != c of v[j]), with torch's gradients (argmax's margin)");
  module.def("prod_last", &prod_last, "the product over the last axis, with torch's gradient");
  module.def("better_", &better_, "PGD's best-point bookkeeping: improved rows, best updated");
  module.def("keep_step_", &keep_step_, "improved rows kept, then x = clamp(x - size*sign(g), lo, hi)");
  module.def("keep_fold_step_", &keep_fold_step_,
             "LR's step: rows kept, the norm's gradient folded in, the step, the next norm");
  module.def("uniform_", &uniform_, "uniform numbers in [0, 1) from SplitMix64 seeded with seed");
}
