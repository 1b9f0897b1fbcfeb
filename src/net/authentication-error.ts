/**
 * Identity failures the user must act on: an unknown or changed host key, a client key the
 * listener does not authorize, a wrong or used pairing code. src/cli/exit-code.ts maps it.
 */
export class AuthenticationError extends Error {
  override name = "AuthenticationError";
}
