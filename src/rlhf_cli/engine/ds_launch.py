"""``python -m rlhf_cli.engine.ds_launch ARGS``: DeepSpeed's per-node launcher (``deepspeed.launcher.launch``,
same arguments), imported through ``ds_import`` so the launcher process skips the mlflow import too."""
from rlhf_cli.engine.ds_import import import_deepspeed

if __name__ == "__main__":
    import_deepspeed()
    from deepspeed.launcher.launch import main

    main()
