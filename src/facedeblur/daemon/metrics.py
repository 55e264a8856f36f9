"""Optional Prometheus metrics (prometheus-client), served on localhost when `daemon.metrics_port` is set.

Frames and faces are counters: `rate(facedeblur_frames_total[5m])` is frames per second. The gauges
of the last job give the same figure without PromQL, for a quick look with curl.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_done = Counter("facedeblur_jobs_done", "Inputs processed and published", registry=r)
        self.jobs_failed = Counter("facedeblur_jobs_failed", "Inputs given up on (moved to failed/)", registry=r)
        self.jobs_retried = Counter("facedeblur_jobs_retried", "Failed runs that will be retried", registry=r)
        self.duplicates = Counter("facedeblur_jobs_duplicate", "Inputs skipped as already-processed content",
                                  registry=r)
        self.queue_depth = Gauge("facedeblur_queue_depth", "Jobs queued", registry=r)
        self.running = Gauge("facedeblur_jobs_running", "Jobs being processed", registry=r)
        self.frames = Counter("facedeblur_frames", "Frames processed", registry=r)
        self.faces = Counter("facedeblur_faces", "Faces restored (one per face per frame)", registry=r)
        self.tracks = Counter("facedeblur_tracks", "People (face tracks) found", registry=r)
        self.last_fps = Gauge("facedeblur_last_job_frames_per_second", "Frames per second of the last job",
                              registry=r)
        self.last_faces_ps = Gauge("facedeblur_last_job_faces_per_second", "Faces per second of the last job",
                                   registry=r)
        self.job_seconds = Histogram("facedeblur_job_seconds", "Processing time per job", registry=r,
                                     buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
        self.model_load_seconds = Gauge("facedeblur_model_load_seconds", "Model load time of the newest worker",
                                        registry=r)
        self.model_seconds_per_frame = Gauge("facedeblur_model_seconds_per_frame",
                                             "Processing latency per frame of the last job", registry=r)

        # One series per running job (label job="<id>"), removed when the job is no longer running.
        self.progress_done = Gauge("facedeblur_job_progress_frames_done", "Frames done in the running job's stage",
                                   ["job", "stage"], registry=r)
        self.progress_total = Gauge("facedeblur_job_progress_frames_total", "Frames in the running job's stage",
                                    ["job", "stage"], registry=r)
        self.progress_ratio = Gauge("facedeblur_job_progress_ratio", "Share of the running job done (0-1)",
                                    ["job"], registry=r)
        self.progress_eta = Gauge("facedeblur_job_eta_seconds", "Estimated seconds until the running job is done",
                                  ["job"], registry=r)

    def show_progress(self, running: list[dict]) -> None:
        """Replace the per-job progress series with those of `running` (journal rows of the running jobs)."""
        from .progress import job_progress
        for gauge in (self.progress_done, self.progress_total, self.progress_ratio, self.progress_eta):
            gauge.clear()
        for row in running:
            progress = job_progress(row)
            if progress is None:
                continue
            job = str(row["id"])
            self.progress_done.labels(job, progress["stage"]).set(progress["frames_done"])
            if progress["frames_total"] is not None:
                self.progress_total.labels(job, progress["stage"]).set(progress["frames_total"])
            if progress["percent"] is not None:
                self.progress_ratio.labels(job).set(progress["percent"] / 100)
            if progress["eta_seconds"] is not None:
                self.progress_eta.labels(job).set(progress["eta_seconds"])

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def job_done(self, seconds: float | None, frames: int | None, faces: int | None, tracks: int | None) -> None:
        self.jobs_done.inc()
        if seconds:
            self.job_seconds.observe(seconds)
        if frames:
            self.frames.inc(frames)
            if seconds:
                self.last_fps.set(frames / seconds)
                self.model_seconds_per_frame.set(seconds / frames)
        if tracks:
            self.tracks.inc(tracks)
        if faces:
            self.faces.inc(faces)
            if seconds:
                self.last_faces_ps.set(faces / seconds)
