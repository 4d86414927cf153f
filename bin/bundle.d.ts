/** A directory of this user's alone, refused otherwise (created with mode 0700). */
export type PrivateDir = { private: string };

/** The bundle of `entry` (a TypeScript path from the package root, or absolute), built if its sources changed: see bundle.js. */
export function bundled(entry: string, dirs?: (string | PrivateDir)[]): Promise<string>;
