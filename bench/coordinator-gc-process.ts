// Child entry: the bench's coordinator process (coordinator-process.ts, same config, messages and
// answers) that also answers `memory`: a full garbage collection first, then process.memoryUsage(),
// so that memory figures are not at the mercy of when V8 last collected; and, for diagnosis,
// `profileStart` / `profileStop {path}`: a V8 CPU profile of the coordinator between the two,
// written to `path` (open it in Chrome DevTools or speedscope).
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { serve } from "./support.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
let session: Session | undefined;

serve({
  memory: () => {
    gc();
    gc();
    return process.memoryUsage();
  },
  profileStart: async () => {
    session ??= new Session();
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
  },
  profileStop: async (message) => {
    if (!session) throw new Error("no profile was started");
    const { profile } = await session.post("Profiler.stop");
    writeFileSync(String(message.path), JSON.stringify(profile));
    session.disconnect();
    session = undefined;
    return message.path;
  },
});
await import("./coordinator-process.ts");
