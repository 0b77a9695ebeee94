"""ReST-EM (Singh et al. 2023): self-training with a verifiable reward; see docs/rest.md.

E-step: sample many solutions per problem from the current model, keep those a binary reward accepts;
M-step: fine-tune the base model on them; repeat while held-out accuracy improves.
"""

from .answers import answers_equal, canonical, extract_answer, normalize_answer
from .config import RestConfig, load_rest_config
from .loop import RestResult, run_rest, stage_order
from .problems import Problem, load_problems, split_problems
from .rewards import CodeTestsReward, Grade, MathAnswerReward, Reward, make_reward, register_reward
from .sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_python, run_tests
from .steps import run_estep, run_eval, run_mstep, select_accepted
from .wordproblems import generate_problems

__all__ = [
    "CodeTestsReward", "Grade", "MathAnswerReward", "Problem", "RestConfig", "RestResult", "Reward", "SandboxLimits",
    "SandboxResult", "SandboxUnavailable", "answers_equal", "canonical", "extract_answer", "generate_problems",
    "load_problems", "load_rest_config", "make_reward", "normalize_answer", "register_reward", "run_estep",
    "run_eval", "run_mstep", "run_python", "run_rest", "run_tests", "select_accepted", "split_problems",
    "stage_order",
]
