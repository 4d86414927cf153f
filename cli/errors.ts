/** A failure the user must see: its message is printed as is, and the process exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }

  static usage(message: string): CliError {
    return new CliError(`${message}\nRun 'jobfleet help' for usage.`, 2);
  }
}
