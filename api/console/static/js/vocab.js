// The values of the API's enumerations the console offers as filters (api/models.py). Labels
// come from i18n (status.*, rule.*, source.*); which actions a case allows comes from the API only.

export const STATUSES = [
  'candidate', 'registered', 'dispatched', 'in_progress', 'disposed', 'verifying', 'closed', 'rejected', 'merged',
];
export const OPEN_STATUSES = ['candidate', 'registered', 'dispatched', 'in_progress', 'disposed', 'verifying'];
export const RULES = ['illegal_parking', 'street_vending', 'illegal_structure', 'unclean_road'];
export const SOURCES = ['camera', 'drone', 'citizen', 'hotline'];
