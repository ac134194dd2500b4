// Series holds the points of one chart: times (Unix ms, strictly increasing)
// and values. Points are keyed by their timestamp, so a point that arrives
// twice (history and live overlap, a replay after a reconnect) is stored
// once, and a late point is inserted in order rather than appended.

/** Series is one field's points, raw or in windows of `every` ms. */
export class Series {
  constructor(every = 0) {
    this.every = every; // 0: raw points; else window length in ms
    this.times = [];
    this.values = [];
    this.counts = new Map(); // window start -> readings merged into it live
    this.seen = new Set(); // raw timestamps merged into windows live
    this.bool = false; // the field is a boolean, charted as 0/1 steps
  }

  /** load replaces the points with a history answer's columns. */
  load(times, values) {
    this.times = [];
    this.values = [];
    this.counts.clear();
    this.seen.clear();
    this.bool = values.length > 0 && values.every(v => typeof v === "boolean" || v === null);
    for (let i = 0; i < times.length; i++) {
      const v = num(values[i]);
      if (v === null) continue;
      const t = times[i];
      if (this.times.length && t <= this.times[this.times.length - 1]) {
        this.put(t, v);
      } else {
        this.times.push(t);
        this.values.push(v);
      }
    }
  }

  /** add merges one reading; it returns false when it changed nothing. */
  add(t, value) {
    const v = num(value);
    if (v === null) return false;
    if (this.times.length === 0) this.bool = typeof value === "boolean";
    if (!this.every) return this.put(t, v);
    if (this.seen.has(t)) return false;
    this.seen.add(t);
    const w = Math.floor(t / this.every) * this.every;
    const i = this.find(w);
    if (i >= 0) {
      const n = this.counts.get(w) || 1;
      this.values[i] = (this.values[i] * n + v) / (n + 1);
      this.counts.set(w, n + 1);
      return true;
    }
    this.counts.set(w, 1);
    return this.put(w, v);
  }

  /** put sets the value at t, inserting it in order. */
  put(t, v) {
    const n = this.times.length;
    if (n === 0 || t > this.times[n - 1]) {
      this.times.push(t);
      this.values.push(v);
      return true;
    }
    let lo = 0, hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.times[mid] < t) lo = mid + 1; else hi = mid;
    }
    if (this.times[lo] === t) {
      if (this.values[lo] === v) return false;
      this.values[lo] = v;
      return true;
    }
    this.times.splice(lo, 0, t);
    this.values.splice(lo, 0, v);
    return true;
  }

  find(t) {
    let lo = 0, hi = this.times.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.times[mid] === t) return mid;
      if (this.times[mid] < t) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }

  /** trim drops points older than from. */
  trim(from) {
    let k = 0;
    while (k < this.times.length && this.times[k] < from) k++;
    if (k > 0) {
      this.times.splice(0, k);
      this.values.splice(0, k);
    }
    if (this.seen.size > 50000) this.seen.clear();
    for (const w of this.counts.keys()) if (w < from) this.counts.delete(w);
  }

  last() {
    const n = this.values.length;
    return n ? this.values[n - 1] : undefined;
  }
}

/** num returns a chartable number: numbers as they are, booleans as 1/0, else null. */
export function num(v) {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}
