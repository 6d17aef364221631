"""nbgrader configuration for this course. The repository root is the nbgrader course root:
source/ and release/ are committed; submitted/, autograded/, feedback/ and gradebook.db are
the instructor's working folders (git-ignored)."""

c = get_config()  # noqa: F821 - injected by traitlets

c.CourseDirectory.course_id = "attention-course"
c.CourseDirectory.root = "."

# The stub students see in place of each solution.
c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Demos shrink under NBGRADER_EXECUTION, but a student's slow code still needs room; the
# per-cell default of 30 s is too tight for the training cells run top to bottom.
c.Execute.timeout = 180

# A test cell that writes to stderr scores 0 in nbgrader. Checks already silence Python
# warnings; this drops whatever still reaches stderr (C-level torch warnings, tqdm bars)
# from every cell before grades are computed. Errors are separate outputs and still count.
c.IgnorePattern.pattern = r"[\s\S]*"

# Demo cells tagged `reader-only` print or draw for a reader and define nothing later cells
# use; autograding skips them (attn_course.notebooks.READER_ONLY). A student's tests cannot be
# skipped this way: grading removes skip tags from nbgrader cells and flags the submission.
c.Execute.skip_cells_with_tag = "reader-only"

# Students sometimes delete a test cell; restore it from the gradebook instead of losing it.
c.OverwriteCells.add_missing_cells = True

# Feedback must not leak the hidden tests' code (see attn_course.feedback for more).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "nbgrader.preprocessors.ClearHiddenTests",
    "attn_course.feedback.ShortHiddenTracebacks",
]
