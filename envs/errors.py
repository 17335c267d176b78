"""What envs raise for input a user can fix (a bad data file, a missing field, impossible task options). It
carries one line, naming the file and row; rl_lora's CLI prints it as such."""


class TaskError(ValueError):
    pass
