// AudioWorklet processor: the microphone's first channel, resampled to 16 kHz, as 16-bit PCM messages of
// about 100 ms (1600 samples) posted to the page. Resampling: a windowed-sinc low-pass below 8 kHz, then
// linear interpolation at the 16 kHz sample times (the context's rate is the global `sampleRate`).
const TARGET = 16000;
const CHUNK = 1600;

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET;          // input samples per output sample
    this.taps = this.lowpass(sampleRate <= TARGET ? 0 : 31, 7200 / sampleRate);
    this.history = new Float32Array(this.taps.length);
    this.filtered = [];                       // low-passed input not yet interpolated
    this.position = 0;                        // next output time, in input samples from filtered[0]
    this.out = new Int16Array(CHUNK);
    this.count = 0;
  }

  lowpass(order, cutoff) {                    // cutoff in cycles per sample; order 0: no filter
    if (order === 0) return Float32Array.of(1);
    const taps = new Float32Array(order + 1);
    let sum = 0;
    for (let i = 0; i <= order; i++) {
      const x = i - order / 2;
      const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
      const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / order);
      taps[i] = sinc * hann;
      sum += taps[i];
    }
    return taps.map((t) => t / sum);
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    const n = this.taps.length;
    for (const sample of input) {
      this.history.copyWithin(0, 1);
      this.history[n - 1] = sample;
      let y = 0;
      for (let i = 0; i < n; i++) y += this.taps[i] * this.history[i];
      this.filtered.push(y);
    }
    while (this.position + 1 < this.filtered.length) {
      const i = Math.floor(this.position);
      const frac = this.position - i;
      const y = this.filtered[i] * (1 - frac) + this.filtered[i + 1] * frac;
      this.out[this.count++] = Math.max(-32768, Math.min(32767, Math.round(y * 32768)));
      if (this.count === CHUNK) {
        this.port.postMessage(this.out.buffer, [this.out.buffer]);
        this.out = new Int16Array(CHUNK);
        this.count = 0;
      }
      this.position += this.step;
    }
    const used = Math.floor(this.position);
    this.filtered = this.filtered.slice(used);
    this.position -= used;
    return true;
  }
}

registerProcessor("capture", Capture);
