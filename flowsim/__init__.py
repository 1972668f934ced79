"""flowsim: training dynamics of shallow transformers as numerical ODEs."""
