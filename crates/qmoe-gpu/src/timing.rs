use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};

use crate::{Gpu, GpuError, Result};

/// Device-time statistics of repeated runs, from CUDA events.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Median microseconds per run.
    pub median_us: f64,
    /// Fastest run, microseconds.
    pub min_us: f64,
    /// Slowest run, microseconds.
    pub max_us: f64,
    /// Number of timed runs.
    pub runs: usize,
}

impl Timing {
    /// Achieved bandwidth in GB/s (10⁹ bytes per second) at the median.
    pub fn gbps(&self, bytes: f64) -> f64 {
        bytes / (self.median_us * 1e-6) / 1e9
    }
}

/// The median of a non-empty sample (mean of the two middle values for even lengths).
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of an empty sample");
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

impl Gpu {
    /// Device time of one call of `work` (which enqueues on [`Gpu::stream`]), in milliseconds,
    /// measured between two CUDA events; synchronises on the end event.
    pub fn time_ms(&self, mut work: impl FnMut() -> Result<()>) -> Result<f32> {
        let ctx = self.context();
        let start = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(GpuError::driver("event create"))?;
        let end = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(GpuError::driver("event create"))?;
        start
            .record(self.stream())
            .map_err(GpuError::driver("event record"))?;
        work()?;
        end.record(self.stream())
            .map_err(GpuError::driver("event record"))?;
        end.synchronize()
            .map_err(GpuError::driver("event synchronize"))?;
        start
            .elapsed_ms(&end)
            .map_err(GpuError::driver("event elapsed"))
    }

    /// Runs `work(i)` `warmup` times, then times `runs` runs one by one with events and returns
    /// the statistics. `i` counts all calls, so a caller can rotate over weight sets larger
    /// than L2 (`i % sets`) and time DRAM rather than cache.
    pub fn bench(
        &self,
        warmup: usize,
        runs: usize,
        mut work: impl FnMut(usize) -> Result<()>,
    ) -> Result<Timing> {
        for i in 0..warmup {
            work(i)?;
        }
        self.sync()?;
        let mut us = Vec::with_capacity(runs);
        for r in 0..runs {
            let ms = self.time_ms(|| work(warmup + r))?;
            us.push(ms as f64 * 1e3);
        }
        let min_us = us.iter().copied().fold(f64::INFINITY, f64::min);
        let max_us = us.iter().copied().fold(0.0, f64::max);
        Ok(Timing {
            median_us: median(&mut us),
            min_us,
            max_us,
            runs,
        })
    }
}

impl Gpu {
    /// Device time per call as a CUDA-graph-captured decode step sees it: `work(0..calls)` is
    /// captured into one graph (after one uncaptured call that loads modules), the graph is
    /// timed with [`Gpu::bench`], and the statistics are divided by `calls`. Rotate `work(i)`
    /// over distinct buffers larger than L2 to time DRAM.
    pub fn bench_graph(
        &self,
        calls: usize,
        warmup: usize,
        runs: usize,
        mut work: impl FnMut(usize) -> Result<()>,
    ) -> Result<Timing> {
        assert!(calls > 0, "bench_graph: calls must be positive");
        work(0)?;
        self.sync()?;
        let stream = self.stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(GpuError::driver("begin capture"))?;
        let captured = (0..calls).try_for_each(&mut work);
        let graph = stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(GpuError::driver("end capture"));
        captured?;
        let graph = graph?.ok_or_else(|| GpuError::Driver {
            op: "end capture: empty graph".into(),
            source: cudarc::driver::DriverError(
                cudarc::driver::sys::cudaError_enum::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
            ),
        })?;
        let t = self.bench(warmup, runs, |_| {
            graph.launch().map_err(GpuError::driver("graph launch"))
        })?;
        let n = calls as f64;
        Ok(Timing {
            median_us: t.median_us / n,
            min_us: t.min_us / n,
            max_us: t.max_us / n,
            runs: t.runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn gbps_counts_decimal_gigabytes() {
        let t = Timing {
            median_us: 1000.0,
            min_us: 1000.0,
            max_us: 1000.0,
            runs: 1,
        };
        assert!((t.gbps(4.0e9) - 4000.0).abs() < 1e-9);
    }
}
