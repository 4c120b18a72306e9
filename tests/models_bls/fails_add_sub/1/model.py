"""add_sub's inputs and outputs, but execute() always raises."""


class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("fails_add_sub says no")
