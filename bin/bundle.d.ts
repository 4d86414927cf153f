/** The bundle of `entry` (a TypeScript path from the package root, or absolute), built if its sources changed: see bundle.js. */
export function bundled(entry: string, dirs?: string[]): Promise<string>;
