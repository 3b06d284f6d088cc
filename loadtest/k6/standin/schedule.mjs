// When arrival-rate executors start iterations (grafana/k6 `lib/executor`), in ms from the
// scenario start; one k6 instance, so no execution segments.
//
// - constant-arrival-rate (`ConstantArrivalRate.Run`): iteration i starts at
//   i · timeUnit/rate, the first at 0, while that time is before `duration`.
// - ramping-arrival-rate (`RampingArrivalRateConfig.cal`): the rate moves linearly from
//   `startRate` through each stage's `target`; iteration i (1-based) starts when the area
//   under the rate curve reaches i, so the first one is not at 0.
// Both: an iteration finding no free VU is dropped (`dropped_iterations`) and, below
// `maxVUs`, one more VU starts initialising in the background.

export function* constantArrivalTimes(rate, timeUnitMs, durationMs) {
  const period = timeUnitMs / rate;
  for (let i = 0; ; i++) {
    const t = i * period;
    if (t >= durationMs) return;
    yield t;
  }
}

export function* rampingArrivalTimes(startRate, timeUnitMs, stages) {
  let from = startRate / timeUnitMs;
  let doneSoFar = 0;
  let endCount = 0;
  let stageStart = 0;
  let i = 1;
  for (const stage of stages) {
    const to = stage.target / timeUnitMs;
    const dur = stage.durationMs;
    if (from !== to) {
      endCount += dur * ((to - from) / 2 + from);
      for (; i <= endCount; i++) {
        const x = (from * dur - Math.sqrt(Math.max(0, dur * (from * from * dur + 2 * (i - doneSoFar) * (to - from))))) / (from - to);
        yield x + stageStart;
      }
    } else {
      endCount += dur * to;
      for (; i <= endCount; i++) {
        yield (i - doneSoFar) / to + stageStart;
      }
    }
    doneSoFar = endCount;
    from = to;
    stageStart += dur;
  }
}
