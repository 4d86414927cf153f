// The active job states as an SQL list, for statements that pick the jobs agents still hold.
import { activeJobStates } from "../../protocol/states.ts";

export const ACTIVE_JOB_STATES = activeJobStates.map((s) => `'${s}'`).join(", ");
