'use strict';
/** The probe scripts' linear classifier: ridge regression onto one-hot labels, with a bias feature. */

/** Solves (A) X = B for a symmetric positive definite A (n × n) and B (n × k), both row-major, by Cholesky. */
function choleskySolve(a, b, n) {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = i === j ? Math.sqrt(s) : s / l[j * n + j];
    }
  }
  const k = b.length / n;
  const x = new Float64Array(b.length);
  const y = new Float64Array(n);
  for (let c = 0; c < k; c++) {
    for (let i = 0; i < n; i++) {
      let s = b[i * k + c];
      for (let j = 0; j < i; j++) s -= l[i * n + j] * y[j];
      y[i] = s / l[i * n + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = y[i];
      for (let j = i + 1; j < n; j++) s -= l[j * n + i] * x[j * k + c];
      x[i * k + c] = s / l[i * n + i];
    }
  }
  return x;
}

/**
 * A ridge classifier fitted on rows [0, train): `feature(i, j)` for j < dims (j = dims is the bias, 1),
 * `label(i)` in [0, classes), `ridge` added to the Gram matrix's diagonal. Returns `classify(i)`: the
 * highest-scoring class of row i.
 */
exports.fitRidge = (feature, train, dims, classes, label, ridge) => {
  const d = dims + 1;
  const f = (i, j) => (j === dims ? 1 : feature(i, j));
  const gram = new Float64Array(d * d);
  const rhs = new Float64Array(d * classes);
  for (let i = 0; i < train; i++) {
    for (let a = 0; a < d; a++) {
      const fa = f(i, a);
      for (let b = 0; b < d; b++) gram[a * d + b] += fa * f(i, b);
      rhs[a * classes + label(i)] += fa;
    }
  }
  for (let a = 0; a < d; a++) gram[a * d + a] += ridge;
  const weights = choleskySolve(gram, rhs, d);
  return (i) => {
    let best = 0;
    let bestScore = -Infinity;
    for (let c = 0; c < classes; c++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += f(i, j) * weights[j * classes + c];
      if (s > bestScore) [best, bestScore] = [c, s];
    }
    return best;
  };
};
