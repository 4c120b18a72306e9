class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("model says no")
