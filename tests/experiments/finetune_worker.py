"""One rank of ``qaa finetune`` under torch.distributed.run, on the small injected tasks of tests/support.py
(tests/experiments/test_finetune_distributed.py starts it): ``finetune_worker.py <qaa finetune options>``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import fake_task_registry  # noqa: E402

import qaa.experiments.tasks  # noqa: E402
from qaa.experiments.cli import main  # noqa: E402

qaa.experiments.tasks.TASKS = fake_task_registry()
sys.exit(main(["finetune", *sys.argv[1:]]))
