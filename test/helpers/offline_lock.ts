/**
 * A package-lock.json for a scratch project that installs local tarballs, with every third-party
 * package copied from the repository's own lock. `npm ci --offline` can install from it: npm's cache
 * holds those packages' tarballs (the repository's own install put them there), found by integrity.
 * Each entry gets its tarball URL, which locks written with omit-lockfile-registry-resolved leave out
 * (npm would otherwise ask the registry for it).
 */

interface LockEntry {
  version?: string;
  resolved?: string;
  integrity?: string;
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  [field: string]: unknown;
}

export interface Lockfile {
  lockfileVersion: number;
  packages: Record<string, LockEntry>;
}

/** A tarball made by `npm pack`, with the manifest it holds. */
export interface LocalTarball {
  file: string;
  integrity: string;
  manifest: LockEntry & { name: string; version: string; scripts?: Record<string, string> };
}

/** Where node would find `name` from the package at `from` in the lock's tree (its folder, then each parent). */
function resolve(lock: Lockfile, from: string, name: string): string | undefined {
  for (let dir = from; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf('/node_modules/')))) {
    const key = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
    if (lock.packages[key] && !lock.packages[key].link) return key;
    if (!dir) return undefined;
  }
}

interface Need {
  /** lock key of the package that needs it ('' for the project) */
  from: string;
  name: string;
  optional: boolean;
}

/** What a package needs: its dependencies, and its peers (optional ones need not be there). */
function needs(from: string, e: LockEntry): Need[] {
  const meta = (e.peerDependenciesMeta ?? {}) as Record<string, { optional?: boolean }>;
  return [
    ...Object.keys(e.dependencies ?? {}).map((name) => ({ from, name, optional: false })),
    ...Object.keys(e.optionalDependencies ?? {}).map((name) => ({ from, name, optional: true })),
    ...Object.keys(e.peerDependencies ?? {}).map((name) => ({ from, name, optional: Boolean(meta[name]?.optional) })),
  ];
}

/** The registry's tarball URL of `name@version` (`registry` ends with a slash). */
function tarballUrl(registry: string, name: string, version: string): string {
  return `${registry}${name}/-/${name.split('/').pop()}-${version}.tgz`;
}

export function offlineLock(
  repoLock: Lockfile,
  dependencies: Record<string, string>,
  local: LocalTarball[],
  registry: string,
): Lockfile {
  const packages: Record<string, LockEntry> = { '': { name: 'pack-install', dependencies } };
  const pending: Need[] = Object.keys(dependencies).map((name) => ({ from: '', name, optional: false }));
  for (const t of local) {
    const { name, version, license, engines, bin, dependencies: deps, peerDependencies } = t.manifest;
    packages[`node_modules/${name}`] = {
      version,
      resolved: `file:${t.file}`,
      integrity: t.integrity,
      hasInstallScript: Boolean(t.manifest.scripts?.install) || undefined,
      license,
      engines,
      bin,
      dependencies: deps,
      peerDependencies,
    };
    pending.push(...needs('', t.manifest));
  }
  while (pending.length) {
    const { from, name, optional } = pending.pop()!;
    if (packages[`node_modules/${name}`] && from === '') continue;
    const key = resolve(repoLock, from, name);
    if (!key) {
      if (optional) continue;
      throw new Error(`${name} (needed by ${from || 'the project'}) is not in the repository's package-lock.json`);
    }
    if (packages[key]) continue;
    // dev/peer flags describe the repository's tree, not this one
    const { dev: _dev, devOptional: _devOptional, peer: _peer, ...entry } = repoLock.packages[key];
    // an npm alias records the real name
    const realName = typeof entry.name === 'string' ? entry.name : name;
    packages[key] = { ...entry, resolved: entry.resolved ?? tarballUrl(registry, realName, entry.version!) };
    pending.push(...needs(key, entry));
  }
  return { lockfileVersion: 3, packages };
}
