'use strict';
/** `--name value` from the command line, or `def` (the scripts' small flag reader). */
exports.flag = (name, def) => {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
